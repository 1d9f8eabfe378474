"""The trials a sweep describes, computed without running any (a dry run):

    python -m kdx.plan +sweep=label_regularization            # one line per trial: key, overrides
    python -m kdx.plan +sweep=label_regularization seed=0,1   # any override narrows or extends it

The grid is expanded as Hydra's basic sweeper expands `python -m kdx -m <same overrides>` (the
sweep's `hydra.sweeper.params`, then the command line), and each job's trial key is the one its run
would get. kdx.status and kdx.report compare a sweep folder with this plan (kdx/launches.py
records every launch's command line), so trials that never started are shown, not silently missing.
"""

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict

from kdx.configs import config_dir
from kdx.errors import KdxError
from kdx.trial import register_resolvers, trial_key


@dataclass(frozen=True)
class PlannedTrial:
    key: str
    overrides: tuple[str, ...]
    task: str
    method: str
    model: str
    seed: int
    init: str            # the student's init: pretrained, random, truncated


def job_overrides(overrides: list[str]) -> list[list[str]]:
    """Every job's overrides, as `python -m kdx -m <overrides>` would launch them."""
    primary = _compose(list(overrides), multirun=True)
    params = primary.hydra.sweeper.get("params")
    params = OmegaConf.to_container(params, resolve=False) if params is not None else {}
    arguments = [f"{key}={value}" for key, value in params.items()] + list(overrides)
    parsed = OverridesParser.create().parse_overrides(arguments)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def plan(overrides: list[str]) -> list[PlannedTrial]:
    """The trials of the sweep `overrides` describe, in launch order. Configs are composed once per
    choice of config groups (model, task, method, ...); plain values (seed, lr, ...) are set on a
    copy, which is what Hydra does after composing the defaults."""
    register_resolvers()
    groups_dir = Path(config_dir())
    composed: dict[tuple, object] = {}
    trials = []
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3", job_name="kdx"):
        jobs = job_overrides(overrides)
        for job in jobs:
            trials.append(planned_trial(job, groups_dir, composed))
    return trials


def planned_trial(job: list[str], groups_dir: Path, composed: dict) -> PlannedTrial:
    """One job's trial; `composed` caches the config of each choice of config groups."""
    parsed = OverridesParser.create().parse_overrides(job)
    group_part = tuple(o.input_line for o in parsed if _is_group(o, groups_dir))
    if group_part not in composed:
        composed[group_part] = _compose(list(group_part))
    cfg = OmegaConf.create(OmegaConf.to_container(composed[group_part], resolve=False))
    with open_dict(cfg):
        for o in parsed:
            if _is_group(o, groups_dir):
                continue
            if o.is_delete():
                raise KdxError(f"kdx.plan cannot apply the deletion {o.input_line!r}", "list the sweep without it")
            OmegaConf.update(cfg, o.key_or_group, o.value(), merge=True, force_add=True)
    student = cfg.model.get("student") or {}
    return PlannedTrial(key=trial_key(cfg), overrides=tuple(job), task=cfg.task.name, method=cfg.method.name,
                        model=cfg.model.name, seed=int(cfg.seed), init=str(student.get("init", "pretrained")))


def _is_group(override, groups_dir: Path) -> bool:
    """A config-group choice (model=..., +sweep=...) rather than a value; `hydra.*` keys only
    shape the launch and are composed with the groups."""
    name = override.key_or_group.split("@")[0]
    return name.startswith("hydra") or (groups_dir / name).is_dir()


def _compose(overrides: list[str], multirun: bool = False):
    """The job config of `overrides`; with `multirun`, the sweep's primary config (with `hydra`),
    where sweep syntax (a,b) is allowed."""
    try:
        if not multirun:
            return compose(config_name="config", overrides=overrides)
        loader = GlobalHydra.instance().config_loader()
        return loader.load_configuration(config_name="config", overrides=overrides, run_mode=RunMode.MULTIRUN)
    except Exception as err:  # Hydra's own errors name the bad override
        raise KdxError(f"the sweep's overrides do not compose: {err}", "check the command line") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdx.plan", description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="the overrides of `python -m kdx -m ...`")
    args = parser.parse_args(argv)
    try:
        trials = plan(args.overrides)
    except KdxError as err:
        print(f"kdx.plan: error: {err}", file=sys.stderr)
        return 2
    for trial in trials:
        print(f"{trial.key}  {' '.join(trial.overrides)}")
    print(f"{len(trials)} trials, {len({t.key for t in trials})} distinct trial keys (nothing was run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
