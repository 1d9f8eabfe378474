"""Every multirun launched into a sweep folder, so kdx.status and kdx.report know the whole grid.

Hydra rewrites `DIR/multirun.yaml` at each launch, so a folder that received several commands
(`method=kd,prokd`, then a variant with other knobs, as experiments/followups.sh does) would show
only the last one's trials as "not started". The `RecordLaunch` callback (conf/config.yaml,
`hydra.callbacks.record_launch`) appends each launch's command-line overrides to
`DIR/kdx_launches.jsonl`; `sweep_grids` reads them back (falling back to multirun.yaml for folders
written before it existed). Kept free of heavy imports: kdx.status reads it.
"""

import json
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

LAUNCHES_FILE = "kdx_launches.jsonl"
SWEEP_CONFIG = "multirun.yaml"


class RecordLaunch(Callback):
    """Appends the sweep's overrides to DIR/kdx_launches.jsonl when a multirun starts (in the
    launching process, for every launcher: local, joblib or SLURM)."""

    def on_multirun_start(self, config, **kwargs) -> None:
        record_launch(Path(config.hydra.sweep.dir), list(config.hydra.overrides.task))


def record_launch(folder: Path, overrides: list[str]) -> None:
    if overrides in launched_grids(folder):
        return      # a relaunch of the same command (resuming) adds no grid
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / LAUNCHES_FILE).open("a") as f:
        f.write(json.dumps({"time": time.strftime("%Y-%m-%d %H:%M:%S"), "overrides": overrides}) + "\n")


def launched_grids(folder: Path) -> list[list[str]]:
    path = folder / LAUNCHES_FILE
    if not path.exists():
        return []
    grids = []
    for line in path.read_text().splitlines():
        try:
            grids.append(list(json.loads(line)["overrides"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            continue    # a line cut by a crash mid-write: the others still count
    return grids


def sweep_grids(folder: Path) -> list[list[str]] | None:
    """The overrides of every launch into `folder` (None: not a sweep folder, the grid is unknown)."""
    grids = launched_grids(folder)
    if grids:
        return grids
    config_file = folder / SWEEP_CONFIG
    if config_file.exists():
        return [list(OmegaConf.load(config_file).hydra.overrides.task)]
    return None
