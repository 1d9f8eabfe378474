"""Shared test fixtures.

`run_kdx` runs one trial in-process, the way `python -m kdx <overrides>` does, and returns its
results dict. It composes conf/ with Hydra's compose API and sets the Hydra runtime config that
`kdx.run.main` reads its output dir from (as Hydra's own `run_job` does), so tests need no
subprocess and stay fast.
"""

import copy
import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict, read_write

# Offline and quiet everywhere in the test session: no hub or W&B traffic.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "WANDB_MODE": "disabled"}
# huggingface_hub reads HF_HUB_OFFLINE once, when it is imported (test modules import transformers
# at collection, before any fixture runs): set it here, or hub lookups retry the network for ~25 s.
for _name, _value in OFFLINE_ENV.items():
    os.environ.setdefault(_name, _value)


# Config groups nested in another (model/student: student variants added to a model pair), not
# options of it.
NESTED_GROUPS = {"model": ("student",)}


def shipped_options(group: str) -> list[str]:
    """The options of a config group as `group=<option>` names them (nested groups left out)."""
    from kdx.__main__ import config_dir

    root = Path(config_dir()) / group
    nested = [root / name for name in NESTED_GROUPS.get(group, ())]
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml")
                  if not any(n in p.parents for n in nested))


def compose_trial(overrides: list[str]):
    """The full config (with its `hydra` node) for `python -m kdx <overrides>`."""
    from kdx.__main__ import config_dir  # also registers the kdx_trial_key resolver

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3", job_name="kdx"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def run_composed(cfg) -> dict:
    """Runs `kdx.run.main` on a composed config, the way hydra.main would."""
    from kdx import run

    output_dir = Path(str(cfg.hydra.run.dir)).absolute()
    with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    output_dir.mkdir(parents=True, exist_ok=True)
    task_cfg = copy.deepcopy(cfg)
    with read_write(task_cfg), open_dict(task_cfg):
        del task_cfg["hydra"]
    return run.main(task_cfg)


@pytest.fixture
def run_kdx(monkeypatch):
    """`run_kdx(*overrides, tmp_path, cache_dir=None) -> results dict`.

    Runs one trial in-process with the given command-line overrides. Unless overridden, the
    trial's folder is `<tmp_path>/run` (hydra.run.dir), outputs go under `<tmp_path>/outputs`,
    the cache (teacher store, tokenizers) under `cache_dir` or `<tmp_path>/cache`, the hub and
    W&B are offline, and the progress bar is off. A KdxError from the trial propagates.
    """

    def run_one(*overrides: str, tmp_path: Path, cache_dir: Path | None = None) -> dict:
        tmp_path = Path(tmp_path)
        cache = Path(cache_dir) if cache_dir is not None else tmp_path / "cache"
        for name, value in OFFLINE_ENV.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("KDX_CACHE_DIR", str(cache))
        given = {o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o}
        defaults = {
            "hydra.run.dir": str(tmp_path / "run"),
            "paths.output_root": str(tmp_path / "outputs"),
            "paths.cache_dir": str(cache),
            "trainer.enable_progress_bar": "false",
        }
        composed = [f"{k}={v}" for k, v in defaults.items() if k not in given] + list(overrides)
        return run_composed(compose_trial(composed))

    return run_one


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny models run as fast on one thread, and far faster than several on a busy, shared CPU
    (the trials themselves get hardware.torch_threads=1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def resolved_job(cfg):
    """The job part of a composed config (without `hydra`), with every interpolation resolved."""
    job = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"])
    OmegaConf.resolve(job)
    return job


@pytest.fixture(autouse=True)
def _offline_by_default(monkeypatch):
    """No test reaches the network by accident (the hub would hang or fail slowly)."""
    for name, value in OFFLINE_ENV.items():
        if name not in os.environ:
            monkeypatch.setenv(name, value)
