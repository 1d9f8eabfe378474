"""CIFAR-10 / CIFAR-100 image classification (the CV settings of Annealing-KD and Continuation-KD).

Data comes from the Hugging Face hub (`uoft-cs/cifar10`, `uoft-cs/cifar100`) or, with
`task.data_dir=DIR`, from the original "python version" files (CIFAR-10: `data_batch_1..5` and
`test_batch`; CIFAR-100: `train` and `test`, labels under `fine_labels`). As in the papers, the
test set is the evaluation split (`val`).

Images are kept as uint8 and normalised per channel when a batch is made. Training batches get
the standard augmentation (He et al. 2016): zero-pad 4 pixels, take a random 32×32 crop, flip
horizontally with probability 1/2 — written with torch ops. The random choices are a pure
function of (augment_seed, epoch, example idx), so a run, and a run resumed mid-way, see the
same augmented images.
"""

import pickle
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import torch

from kdx.errors import KdxError
from kdx.knobs import Count, NonNegativeInt, Seed
from kdx.tasks.base import Task, TaskSpec
from kdx.tasks.tensor_data import TensorDataModule, TensorSplit

IMAGE_SHAPE = (3, 32, 32)


# ---- reading the original files ---------------------------------------------------------------
def read_batch_file(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR python-version pickle → images (N, 3, 32, 32) uint8 and labels (N,) int64.

    The file holds a dict with `data` (N × 3072 uint8: the 1024 red, then green, then blue
    values of each image, row-major) and the labels under `label_key`.
    """
    if not path.is_file():
        raise KdxError(f"CIFAR file {path} is missing",
                       "task.data_dir must be the folder of the CIFAR 'python version' "
                       "(cifar-10-batches-py: data_batch_1..5 + test_batch; cifar-100-python: train + test)")
    try:
        with open(path, "rb") as f:
            raw = pickle.load(f, encoding="bytes")
    except Exception as err:  # truncated, not a pickle, ...
        raise KdxError(f"CIFAR file {path} cannot be read as a CIFAR batch pickle ({type(err).__name__}: {err})",
                       "re-download and unpack the CIFAR 'python version' archive into task.data_dir") from None
    if not isinstance(raw, dict):
        raise KdxError(f"CIFAR file {path} holds a {type(raw).__name__}, not the dict of a CIFAR batch",
                       "re-download and unpack the CIFAR 'python version' archive into task.data_dir")
    entries = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}
    for key in ("data", label_key):
        if key not in entries:
            raise KdxError(f"CIFAR file {path} has no {key!r} entry (it has {sorted(entries)})",
                           "use the CIFAR 'python version' files; CIFAR-10 labels are under 'labels', "
                           "CIFAR-100 fine labels under 'fine_labels'")
    data = np.asarray(entries["data"])
    labels = np.asarray(entries[label_key], dtype=np.int64)
    pixels = int(np.prod(IMAGE_SHAPE))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != pixels or len(labels) != len(data):
        raise KdxError(f"CIFAR file {path} is malformed: data {data.dtype} {data.shape}, {len(labels)} labels "
                       f"(expected uint8 N×{pixels} and N labels)",
                       "re-download and unpack the CIFAR 'python version' archive into task.data_dir")
    return data.reshape(-1, *IMAGE_SHAPE), labels


def read_folder(data_dir: str, archive_folder: str, train_files: list[str], test_files: list[str],
                label_key: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder = Path(data_dir).expanduser()
    if not folder.is_dir():
        raise KdxError(f"task.data_dir={data_dir} is not a folder",
                       f"point task.data_dir at the unpacked CIFAR 'python version' folder ({archive_folder})")
    if not (folder / train_files[0]).exists() and (folder / archive_folder).is_dir():
        folder = folder / archive_folder  # the folder the archive unpacks into

    def read_all(names):
        parts = [read_batch_file(folder / name, label_key) for name in names]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    return {"train": read_all(train_files), "val": read_all(test_files)}


def read_hub(hub_id: str, image_column: str, label_column: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    import datasets  # here, not at the top: 2.7 s to import, and only hub loading needs it

    fix = (f"download the CIFAR 'python version' archive where there is network, unpack it and pass "
           f"task.data_dir=/path/to/it (or run once online so that {hub_id} is in the Hugging Face cache)")
    try:
        loaded = datasets.load_dataset(hub_id)
    except Exception as err:  # offline, no such dataset, connection errors: all mean "not available"
        first_line = (str(err).splitlines() or [""])[0][:200]
        raise KdxError(f"cannot load dataset {hub_id!r} from the Hugging Face hub ({type(err).__name__}: "
                       f"{first_line})", fix) from None
    splits = {}
    for ours, theirs in (("train", "train"), ("val", "test")):
        if theirs not in loaded:
            raise KdxError(f"dataset {hub_id!r} has no {theirs!r} split (it has {list(loaded)})", fix)
        table = loaded[theirs]
        for column in (image_column, label_column):
            if column not in table.column_names:
                raise KdxError(f"dataset {hub_id!r} has no column {column!r} (it has {table.column_names})",
                               "set task.image_column / task.label_column to the dataset's columns")
        try:
            images = np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in table[image_column]])
        except ImportError as err:
            raise KdxError(f"decoding the images of {hub_id!r} needs Pillow ({err})",
                           f"pip install pillow, or {fix}") from None
        splits[ours] = (images.transpose(0, 3, 1, 2).copy(), np.asarray(table[label_column], dtype=np.int64))
    return splits


# ---- normalisation and augmentation -----------------------------------------------------------
def normalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (B, 3, H, W) → float (pixel/255 − mean) / std per channel."""
    mean = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (images.float() / 255.0 - mean) / std


def normalise_batch(batch: dict, mean, std) -> dict:
    return {**batch, "pixel_values": normalise(batch["pixel_values"], mean, std)}


@dataclass(frozen=True)
class AugmentationPlan:
    offsets: torch.Tensor   # (N, 2) top-left corner of the crop in the padded image, in [0, 2·padding]
    flips: torch.Tensor     # (N,) bool: flip horizontally


def augmentation_plan(seed: int, epoch: int, size: int, padding: int) -> AugmentationPlan:
    """The random crop corners and flips of every training example in one epoch."""
    rng = np.random.default_rng([seed, epoch])
    offsets = rng.integers(0, 2 * padding + 1, size=(size, 2))
    flips = rng.random(size) < 0.5
    return AugmentationPlan(torch.as_tensor(offsets, dtype=torch.long), torch.as_tensor(flips))


def crop_and_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int,
                  fill) -> torch.Tensor:
    """Pad each image by `padding` pixels of value `fill` (per channel), crop the original size at
    `offsets` (row, column), then mirror the images where `flips`."""
    b, c, h, w = images.shape
    fill = torch.as_tensor(fill, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    padded = fill.expand(b, c, h + 2 * padding, w + 2 * padding).clone()
    padded[:, :, padding:padding + h, padding:padding + w] = images
    rows = offsets[:, 0:1].to(images.device) + torch.arange(h, device=images.device)   # (B, H)
    cols = offsets[:, 1:2].to(images.device) + torch.arange(w, device=images.device)   # (B, W)
    batch = torch.arange(b, device=images.device).view(b, 1, 1)
    cropped = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]    # (B, H, W, C)
    cropped = cropped.permute(0, 3, 1, 2)
    return torch.where(flips.to(images.device).view(b, 1, 1, 1), cropped.flip(-1), cropped)


# ---- task and data module ---------------------------------------------------------------------
class CifarDataModule(TensorDataModule):
    """Normalises every batch; augments training batches (only while the Trainer trains)."""

    def __init__(self, splits: dict[str, TensorSplit], spec: TaskSpec, data_cfg, mean, std,
                 augment: bool, padding: int, seed: int):
        # a partial, not a bound method: DataLoader workers can pickle it without the DataModule
        super().__init__(splits, spec.eval_splits, data_cfg, transform=partial(normalise_batch, mean=mean, std=std))
        self.mean, self.std = list(mean), list(std)
        self.augment, self.padding, self.seed = augment, padding, seed
        self._plan: tuple[int, AugmentationPlan] | None = None

    @property
    def train_inputs_vary(self) -> bool:
        """Augmented training images differ per epoch (the teacher-output cache is then not exact)."""
        return self.augment

    def plan(self, epoch: int) -> AugmentationPlan:
        if self._plan is None or self._plan[0] != epoch:
            self._plan = (epoch, augmentation_plan(self.seed, epoch, len(self.splits["train"]["labels"]),
                                                   self.padding))
        return self._plan[1]

    def augment_batch(self, batch: dict, epoch: int) -> dict:
        plan = self.plan(epoch)
        black = [-m / s for m, s in zip(self.mean, self.std)]  # a zero pixel, normalised
        images = crop_and_flip(batch["pixel_values"], plan.offsets[batch["idx"]], plan.flips[batch["idx"]],
                               self.padding, black)
        return {**batch, "pixel_values": images}

    def on_before_batch_transfer(self, batch, dataloader_idx):
        trainer = self.trainer
        if self.augment and trainer is not None and trainer.training:
            return self.augment_batch(batch, trainer.current_epoch)
        return batch


class CifarTask(Task):
    def __init__(self, name: str, num_labels: int, hub_id: str, label_key: str, archive_folder: str,
                 train_files: list[str], test_files: list[str], mean: list[float], std: list[float],
                 data_dir: str | None = None, image_column: str = "img", label_column: str = "label",
                 augment: bool = True, crop_padding: NonNegativeInt = 4, augment_seed: Seed = 0,
                 max_train_examples: Count | None = None, max_eval_examples: Count | None = None,
                 metrics=("acc",), main_metric: str = "acc", max_length: Count | None = None):
        """`max_length` is unused (images have no tokens); data.max_length reads it."""
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise KdxError(f"task.mean={list(mean)} / task.std={list(std)} must be 3 values each, std > 0",
                           "give one mean and one (positive) std per colour channel")
        self.spec = TaskSpec(name=name, num_labels=num_labels, metrics=list(metrics), main_metric=main_metric)
        self.source = dict(hub_id=hub_id, label_key=label_key, archive_folder=archive_folder,
                           train_files=list(train_files), test_files=list(test_files),
                           image_column=image_column, label_column=label_column)
        self.data_dir = data_dir
        self.mean, self.std = list(mean), list(std)
        self.augment, self.padding, self.seed = augment, int(crop_padding), int(augment_seed)
        self.limits = {"train": max_train_examples, "val": max_eval_examples}

    def training_texts(self):
        raise KdxError(f"task {self.spec.name} has images, no text: the model pair's tokenizer has nothing to train on",
                       "use an image model pair, e.g. model=resnet110_to_resnet8 or model=resnet56_to_resnet20")

    def splits(self) -> dict[str, TensorSplit]:
        """`train` and `val` (the test set) as tensors; loaded once."""
        if not hasattr(self, "_splits"):
            self._splits = self._load()
        return self._splits

    def _load(self) -> dict[str, TensorSplit]:
        s = self.source
        if self.data_dir:
            arrays = read_folder(self.data_dir, s["archive_folder"], s["train_files"], s["test_files"], s["label_key"])
        else:
            arrays = read_hub(s["hub_id"], s["image_column"], s["label_column"])
        splits = {}
        for name, (images, labels) in arrays.items():
            bad = labels[(labels < 0) | (labels >= self.spec.num_labels)]
            if len(bad):
                raise KdxError(f"{self.spec.name}: {name} labels must lie in [0, {self.spec.num_labels}), found {bad[0]}",
                               "check that task.data_dir holds this dataset's files (CIFAR-10 vs CIFAR-100)")
            limit = self.limits[name]
            if limit is not None:
                images, labels = images[:limit], labels[:limit]
            splits[name] = {"pixel_values": torch.from_numpy(np.ascontiguousarray(images)),
                            "labels": torch.from_numpy(labels),
                            "idx": torch.arange(len(labels))}
        return splits

    def datamodule(self, tokenizer, data_cfg) -> L.LightningDataModule:
        return CifarDataModule(self.splits(), self.spec, data_cfg, self.mean, self.std,
                               self.augment, self.padding, self.seed)
