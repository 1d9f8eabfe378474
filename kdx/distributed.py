"""Data-parallel (DDP) trials wherever they run: one trial, a job of a `-m` multirun, a SLURM task.

Three things Lightning does not do for a Hydra multirun of DDP jobs:
- Its launcher starts ranks 1..N-1 by re-running the parent's command line, which for
  `python -m kdx -m ...` re-runs the whole sweep in every rank. `install_rank_command` makes the
  extra ranks run only the current trial: `python -m kdx <this job's overrides>` in its folder.
- It leaves MASTER_ADDR/PORT, WORLD_SIZE, LOCAL_RANK, ... in the parent's environment and the
  process group open, so the next job of the sweep believes it is a rank that was launched for it.
  `ddp_job()` restores the environment and closes the process group when a trial ends.
- Its validation sampler pads each rank's share to equal length by repeating samples, which counts
  them twice in the metrics that pick the best checkpoint. `ExactValidation` gives every evaluation
  sample to exactly one rank (the metrics gather uneven shares).
"""

import os
import sys
from contextlib import contextmanager

import lightning as L
import torch.distributed as dist
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader

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


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class ExactValidation(L.LightningDataModule):
    """A task's datamodule whose evaluation loaders split the samples across ranks without padding
    (Lightning keeps a loader's own DistributedSampler). Single-process runs see the task's loaders."""

    def __init__(self, datamodule: L.LightningDataModule):
        super().__init__()
        self.inner = datamodule

    def prepare_data(self):
        self.inner.prepare_data()

    def setup(self, stage=None):
        self.inner.setup(stage)

    def train_dataloader(self):
        return self.inner.train_dataloader()

    def val_dataloader(self):
        loaders = self.inner.val_dataloader()
        if world_size() == 1:
            return loaders
        single = not isinstance(loaders, (list, tuple))
        exact = [self._unrepeated(loader) for loader in ([loaders] if single else loaders)]
        return exact[0] if single else exact

    @staticmethod
    def _unrepeated(loader: DataLoader) -> DataLoader:
        return DataLoader(loader.dataset, batch_size=loader.batch_size, collate_fn=loader.collate_fn,
                          num_workers=loader.num_workers,
                          sampler=UnrepeatedDistributedSampler(loader.dataset, shuffle=False))
