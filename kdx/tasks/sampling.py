"""The training order as a pure function of (seed, epoch).

A plain `shuffle=True` loader draws its order from the global RNG, whose state a checkpoint does
not hold, so a run resumed at epoch e would see a different order than the uninterrupted run.
Lightning calls `set_epoch` on the train sampler before every epoch (also after a resume, with
the restored epoch), so seeding each epoch's permutation from (seed, epoch) makes a resumed run
replay exactly the batches the uninterrupted one saw.
"""

import torch
from torch.utils.data import Sampler


class EpochShuffle(Sampler[int]):
    def __init__(self, size: int, seed: int | None = None):
        self.size = size
        # The trial's seed (seed_everything runs before the loaders are built).
        self.seed = torch.initial_seed() if seed is None else seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


def evaluation_sampler(dataset) -> Sampler | None:
    """The sampler of an evaluation loader: under DDP (a process group is up when Lightning asks
    for the loaders) each sample goes to exactly one rank, without the padding repeats of
    Lightning's default sampler that would count samples twice in the metrics (torchmetrics
    gathers the uneven shares); otherwise None, the loader's order."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    if torch.distributed.get_world_size() == 1:
        return None
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

    return UnrepeatedDistributedSampler(dataset, shuffle=False)
