"""What lets a resumed run replay the uninterrupted one exactly (on CPU, deterministic=True).

A Lightning checkpoint restores weights, optimizer, LR schedule and the epoch/step counters, but
not the global random state, so after a resume dropout would draw different masks. Reseeding the
global RNGs at the start of every training epoch from (trial seed, phase, epoch) makes the random
stream of an epoch independent of what ran before it; a run resumed from an epoch-end
checkpoint (last.ckpt) then sees the same dropout masks (and, with tasks/sampling.EpochShuffle,
the same batches) as the uninterrupted run.
"""

import random

import numpy as np
import torch


def epoch_seed(seed: int, phase: int, epoch: int) -> int:
    return (seed * 1_000_003 + phase * 10_007 + epoch) % 2**32


def seed_epoch(seed: int, phase: int, epoch: int) -> None:
    """Seeds the global RNGs for one training epoch (DistillationModule.on_train_epoch_start)."""
    value = epoch_seed(seed, phase, epoch)
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)  # also seeds every CUDA device
