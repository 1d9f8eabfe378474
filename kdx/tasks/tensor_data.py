"""A DataModule over in-memory tensors (image and vector tasks: nothing to tokenize).

Each split is a dict of equally long tensors: the model inputs (e.g. `pixel_values` or `x`),
`labels` and `idx`. A batch is those tensors indexed by a batch of row numbers, so there is no
per-example Python work; `transform(batch)` (e.g. normalisation) runs when a batch is made.
"""

from typing import Callable

import lightning as L
import torch
from torch.utils.data import DataLoader

from kdx.errors import KdxError
from kdx.tasks.sampling import EpochShuffle, evaluation_sampler  # resumable order; exact DDP evaluation

TensorSplit = dict[str, torch.Tensor]


class RowBatches:
    """collate_fn: a list of row numbers → the split's tensors at those rows, transformed."""

    def __init__(self, split: TensorSplit, transform: Callable[[dict], dict] | None = None):
        self.split = split
        self.transform = transform

    def __call__(self, rows: list[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(rows, dtype=torch.long)
        batch = {k: v[index] for k, v in self.split.items()}
        return self.transform(batch) if self.transform is not None else batch


def check_split(name: str, split: TensorSplit) -> None:
    lengths = {k: len(v) for k, v in split.items()}
    if "labels" not in split or "idx" not in split or len(set(lengths.values())) != 1:
        raise KdxError(f"split {name!r} is malformed: tensor lengths {lengths}",
                       "every split needs equally long model inputs, `labels` and `idx`")
    if lengths["labels"] == 0:
        raise KdxError(f"split {name!r} is empty", "check the data files and the max_*_examples knobs")


class TensorDataModule(L.LightningDataModule):
    def __init__(self, splits: dict[str, TensorSplit], eval_splits: list[str], data_cfg,
                 transform: Callable[[dict], dict] | None = None):
        super().__init__()
        for name, split in splits.items():
            check_split(name, split)
        self.splits = splits
        self.eval_splits = list(eval_splits)
        self.cfg = data_cfg
        self.transform = transform

    def _loader(self, name: str, train: bool) -> DataLoader:
        split = self.splits[name]
        return DataLoader(
            range(len(split["labels"])),
            batch_size=self.cfg.batch_size if train else self.cfg.eval_batch_size,
            sampler=EpochShuffle(len(split["labels"])) if train else evaluation_sampler(range(len(split["labels"]))),
            collate_fn=RowBatches(split, self.transform),
            num_workers=self.cfg.num_workers,
            pin_memory=bool(self.cfg.get("pin_memory", False)),   # hardware=gpu: faster host-to-device copies
        )

    def train_dataloader(self):
        return self._loader("train", train=True)

    def val_dataloader(self):
        return [self._loader(name, train=False) for name in self.eval_splits]
