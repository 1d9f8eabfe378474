"""Data-parallel (DDP) trials wherever they run: one trial, a job of a `-m` multirun, a SLURM task.

Two things Lightning does not do for a Hydra multirun of DDP jobs:
- Its launcher starts ranks 1..N-1 by re-running the parent's command line, which for
  `python -m kdx -m ...` re-runs the whole sweep in every rank. `install_rank_command` makes the
  extra ranks run only the current trial: `python -m kdx <this job's overrides>` in its folder.
- It leaves MASTER_ADDR/PORT, WORLD_SIZE, LOCAL_RANK, ... in the parent's environment and the
  process group open, so the next job of the sweep believes it is a rank that was launched for it.
  `ddp_job()` restores the environment and closes the process group when a trial ends.
(Exact evaluation under DDP is the tasks' part: kdx.tasks.sampling.evaluation_sampler.)
"""

import os
import sys
from contextlib import contextmanager

import torch.distributed as dist

# What a DDP launch writes into the environment of the process that runs it.
DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "RANK",
           "LOCAL_WORLD_SIZE", "PL_GLOBAL_SEED", "PL_SEED_WORKERS")


def rank_command(local_rank: int) -> tuple[list[str], str]:
    """The command that starts rank `local_rank` of the current trial (and nothing else)."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    output_dir = str(hydra_cfg.runtime.output_dir).replace("\\", "\\\\").replace('"', '\\"')
    command = [sys.executable, "-m", "kdx", *hydra_cfg.overrides.task,
               f'hydra.run.dir="{output_dir}"', "hydra.output_subdir=null",
               f"hydra.job.name=kdx_rank_{local_rank}"]
    return command, hydra_cfg.runtime.cwd or os.getcwd()


def install_rank_command() -> None:
    """Lightning's subprocess launchers (Fabric's and the Trainer's, which imports it by name) ask
    this module-level function for a rank's command."""
    from lightning.fabric.strategies.launchers import subprocess_script as fabric_launcher
    from lightning.pytorch.strategies.launchers import subprocess_script as trainer_launcher

    fabric_launcher._hydra_subprocess_cmd = rank_command
    trainer_launcher._hydra_subprocess_cmd = rank_command


@contextmanager
def ddp_job():
    """Runs one trial and leaves the process as it found it (environment, process group)."""
    saved = {name: os.environ.get(name) for name in DDP_ENV}
    try:
        yield
    finally:
        close_process_group()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def close_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
