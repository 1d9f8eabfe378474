"""The teacher-output cache: a frozen teacher's outputs on the training split, computed once and
shared by every epoch of every trial that would compute the same numbers.

Where it lives: `<paths.cache_dir>/teacher_outputs/<task>-<key>/`, one folder per key, with the
arrays as `.npy` files (read memory-mapped) and `manifest.json`. The key is a hash of everything
the stored numbers depend on: the teacher's weights (a hash of its state dict) and architecture,
the training data (a fingerprint of the split's examples), the tokenizer (its vocabulary), the
maximum length, and what is stored (full logits or top-k, the dtype, the batch size of the fill).

How it is verified: the manifest is written last and names the key, every array's shape, dtype
and SHA-256. Opening a folder checks all of it; a missing, truncated, corrupted or mismatched
file is reported and the folder recomputed, never read. Filling happens in a temporary folder
renamed into place under a file lock, so parallel trials wait for one copy and readers never see
half of one.

When it is used (`teacher.cache=true`, the default, turns it on where it is exact): the method
learns from a frozen teacher (teacher, self-teacher, assistant), reads its logits only, does not
change the teacher's weights while training, and the training inputs are a fixed function of the
example id (no random augmentation). Sequence-level tasks store the full logits; token-level
tasks store top-k logits plus the tail mass (kdx/topk.py) when `teacher.cache_topk=K` is set,
and use the live teacher otherwise. A batch finds its rows by `idx`; perturbed inputs (MATE-KD,
Combined-KD, BPKD) still go through the live teacher.

Staged teachers: Pro-KD's replay loads its teacher's trajectory checkpoints T^(1) … T^(N) one after
another. Each gets its own cache (keyed by its weights, as any teacher's), opened when training
first reaches its stage (`StagedTeacherOutputs`). `teacher.cache_trajectory=auto` uses them when a
stage's fill costs no more than the live teacher would in this trial (stages ≤ the passes over the
data: the default epoch-end trajectory); `always` also when the trajectory is denser (they pay back
in later trials on the same trajectory: Pro-KD knob variants); `never` keeps the live teacher.
"""

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
from filelock import FileLock
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from kdx import topk
from kdx.errors import KdxError
from kdx.hardware import accelerator_device
from kdx.hashing import digest
from kdx.methods.base import Budget, Method
from kdx.models.outputs import ModelOutputs, freeze
from kdx.models.weights import weights_digest
from kdx.results import write_json_atomic
from kdx.tasks.base import EncodedDataset, TaskSpec, model_inputs
from kdx.tasks.families import TOKEN_LEVEL
from kdx.tasks.tensor_data import RowBatches

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DTYPES = {"float32": np.float32, "float16": np.float16}
TRAJECTORY_MODES = ("auto", "always", "never")


@dataclass(frozen=True)
class CacheSettings:
    """`teacher.*` in conf/config.yaml."""

    enabled: bool = True
    dtype: str = "float32"           # float16 halves the files; outputs then carry fp16 rounding
    topk: int | None = None          # token-level tasks: keep the k largest logits + tail mass
    trajectory: str = "auto"         # staged teachers (Pro-KD replay): auto | always | never

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "CacheSettings":
        node = cfg.get("teacher") or {}
        settings = cls(enabled=bool(node.get("cache", True)), dtype=str(node.get("cache_dtype", "float32")),
                       topk=node.get("cache_topk"), trajectory=str(node.get("cache_trajectory", "auto")))
        if settings.dtype not in DTYPES:
            raise KdxError(f"teacher.cache_dtype={settings.dtype!r} is not supported",
                           f"use one of {list(DTYPES)}")
        if settings.trajectory not in TRAJECTORY_MODES:
            raise KdxError(f"teacher.cache_trajectory={settings.trajectory!r} is not supported",
                           f"use one of {list(TRAJECTORY_MODES)}")
        if settings.topk is not None and int(settings.topk) < 1:
            raise KdxError(f"teacher.cache_topk={settings.topk} must be a positive integer (or null)")
        return settings


# Families whose teacher logits the cache stores: one vector per example, or top-k per token of a
# language model. Span and question-answering scores are read live (their position axis follows
# each task's windowing).
CACHED_FAMILIES = ("classification", "regression", "language_modeling", "generation")


def reason_not_cached(settings: CacheSettings, method: Method, spec: TaskSpec, datamodule) -> str | None:
    """Why the cache would not be exact (or is off) for this trial; None when it is used."""
    if not settings.enabled:
        return "teacher.cache=false"
    if not method.needs_frozen_teacher:
        return f"method={method.name} has no frozen teacher"
    if not method.outputs.logits_only:
        return f"method={method.name} reads the teacher's hidden states or attention maps, not only its logits"
    if method.changes_teacher_weights and not method.teacher_stages:
        return f"method={method.name} changes the teacher's weights while it trains"
    if getattr(datamodule, "train_inputs_vary", False):
        return "the training inputs are randomly augmented, so the teacher sees different inputs each epoch"
    if spec.family not in CACHED_FAMILIES:
        return f"the cache stores sequence-level and language-model logits; {spec.family} tasks use the live teacher"
    if spec.family in TOKEN_LEVEL and settings.topk is None:
        return f"token-level logits ({spec.family}) are stored only as top-k: set teacher.cache_topk=K to cache them"
    return None


def reason_stages_not_cached(settings: CacheSettings, stages: int, passes: float) -> str | None:
    """Why a staged teacher's per-stage caches are not used; None when they are. Filling a stage's
    cache costs one teacher pass over the split, while the trial reads each example `passes` times in
    all, `passes / stages` times per stage: `auto` fills them when that is at least one pass (the
    trial then pays no more than the live teacher and every later trial on the same trajectory, a
    knob variant, pays nothing)."""
    if settings.trajectory == "never":
        return "teacher.cache_trajectory=never"
    if settings.trajectory == "auto" and passes < stages:
        return (f"the teacher has {stages} stages and the trial reads each example {passes:g} times, so one "
                f"cache per stage would cost {stages / passes:.1f}x the live teacher's passes in this trial; "
                "teacher.cache_trajectory=always fills them anyway (they pay back in later trials on the "
                "same trajectory)")
    return None


def teacher_passes(cfg: DictConfig, method: Method, datamodule) -> float:
    """How many times the method's first phase (the one that reads the teacher) reads each example."""
    trainer = cfg.trainer
    budget = Budget(max_epochs=trainer.get("max_epochs"), max_steps=trainer.get("max_steps"))
    epochs = method.phases(budget)[0].max_epochs or budget.max_epochs or float("inf")
    if budget.max_steps is not None and budget.max_steps > 0:
        datamodule.setup("fit")
        batches = len(datamodule.train_dataloader()) / int(trainer.get("accumulate_grad_batches") or 1)
        epochs = min(epochs, budget.max_steps / batches)
    return float(epochs)


# ---- identities ---------------------------------------------------------------------------------
def architecture(model: nn.Module) -> dict:
    config = getattr(model, "config", None)
    described = config.to_dict() if config is not None and hasattr(config, "to_dict") else repr(model)
    return {"class": type(model).__name__, "config": described}


def tokenizer_identity(tokenizer) -> str | None:
    if tokenizer is None:
        return None
    return digest({"class": type(tokenizer).__name__, "vocab": sorted(tokenizer.get_vocab().items()),
                   "special": tokenizer.all_special_tokens}, length=64)


def data_fingerprint(loader: DataLoader) -> str:
    """A hash of the split's model inputs and ids, read from the source where it is cheap (the
    examples of a text split, the tensors of a tensor split), else from the batches themselves."""
    sha = hashlib.sha256()
    dataset, collate = loader.dataset, loader.collate_fn
    if isinstance(dataset, EncodedDataset):
        for ex in dataset.examples:
            sha.update(f"{ex.idx}\x1f{ex.text_a}\x1f{ex.text_b}\x1e".encode())
    elif isinstance(collate, RowBatches):
        for name, tensor in sorted(collate.split.items()):
            if name != "labels":
                sha.update(name.encode())
                sha.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        sha.update(repr(collate.transform).encode())
    else:
        for batch in loader:
            for name, tensor in sorted(batch.items()):
                if name != "labels":
                    sha.update(name.encode())
                    sha.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()


def sequential_loader(datamodule, batch_size: int) -> DataLoader:
    """The training split in id order, batched as the training loader batches it (same collate)."""
    datamodule.setup("fit")
    train = datamodule.train_dataloader()
    return DataLoader(train.dataset, batch_size=batch_size, shuffle=False, collate_fn=train.collate_fn)


# ---- reading ------------------------------------------------------------------------------------
class TeacherOutputs:
    """The verified arrays of one cache folder, memory-mapped, looked up by example id."""

    def __init__(self, folder: Path, manifest: dict):
        self.folder = folder
        self.manifest = manifest
        self.arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in manifest["arrays"]}
        ids = np.asarray(self.arrays["idx"])
        self.row_of = np.full(int(ids.max()) + 1, -1, dtype=np.int64)
        self.row_of[ids] = np.arange(len(ids))
        self.vocab = manifest.get("vocab")

    def rows(self, idx: torch.Tensor) -> np.ndarray:
        ids = idx.detach().cpu().numpy()
        if ids.min() < 0 or ids.max() >= len(self.row_of) or (self.row_of[ids] < 0).any():
            raise KdxError(f"the teacher-output cache at {self.folder} has no row for some example ids of this batch",
                           "the training data changed since it was filled: run with teacher.cache=false, or "
                           "delete the folder")
        return self.row_of[ids]

    def outputs(self, batch: dict, device: torch.device) -> ModelOutputs:
        rows = self.rows(batch["idx"])
        mask = batch.get("attention_mask")
        if "logits" in self.arrays:
            logits = torch.from_numpy(self.arrays["logits"][rows].astype(np.float32))
        else:
            length = batch["input_ids"].shape[1]
            values = torch.from_numpy(self.arrays["values"][rows, :length].astype(np.float32))
            indices = torch.from_numpy(self.arrays["indices"][rows, :length].astype(np.int64))
            tail = torch.from_numpy(self.arrays["tail"][rows, :length].astype(np.float32))
            logits = topk.expand(values, indices, tail, self.vocab)
        return ModelOutputs(logits=logits.to(device, non_blocking=True), mask=mask)


class StagedTeacherOutputs:
    """One cache per stage of a staged teacher (Pro-KD's replay of the teacher's trajectory, which
    loads T^(i) into the frozen teacher): a batch reads the cache of the weights loaded now, opened
    (and filled, if no earlier trial did) when the stage is first read. Each is keyed by the loaded
    weights themselves, like any teacher's cache, so a stage can never read another's outputs."""

    def __init__(self, plan: "CachePlan", teacher: nn.Module, method: Method):
        self.plan, self.teacher, self.method = plan, teacher, method
        self.by_stage: dict[int | None, TeacherOutputs] = {}

    def outputs(self, batch: dict, device: torch.device) -> ModelOutputs:
        stage = self.method.loaded_stage
        if stage not in self.by_stage:
            self.by_stage[stage] = self.plan.open(self.teacher)
        return self.by_stage[stage].outputs(batch, device)


def sha256_file(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            sha.update(chunk)
    return sha.hexdigest()


def verify(folder: Path, key: str) -> tuple[dict | None, str]:
    """(manifest, "") when `folder` holds a complete, uncorrupted cache for `key`; else (None, why)."""
    path = folder / MANIFEST
    if not path.exists():
        return None, "no manifest"
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None, "the manifest is not valid JSON"
    if manifest.get("key") != key or manifest.get("format") != FORMAT_VERSION:
        return None, f"the manifest is for key {manifest.get('key')!r}, not {key!r}"
    for name, meta in manifest.get("arrays", {}).items():
        file = folder / f"{name}.npy"
        if not file.exists():
            return None, f"{file.name} is missing"
        if sha256_file(file) != meta["sha256"]:
            return None, f"{file.name} does not match its checksum (corrupted or changed)"
        array = np.load(file, mmap_mode="r")
        if list(array.shape) != meta["shape"] or str(array.dtype) != meta["dtype"]:
            return None, f"{file.name} has shape {array.shape} / {array.dtype}, not {meta['shape']} / {meta['dtype']}"
    if "idx" not in manifest.get("arrays", {}):
        return None, "the manifest lists no idx array"
    return manifest, ""


def ensure(folder: Path, key: str, describe: dict, fill: Callable[[Path], dict]) -> TeacherOutputs:
    """The verified cache in `folder`, filled by `fill(tmp_folder) -> {array name: extra manifest
    entries}` when absent or invalid. One process fills; the others wait on the lock and read."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        manifest, why = verify(folder, key)
        if manifest is None:
            if folder.exists():
                print(f"[kdx] teacher-output cache {folder} failed verification ({why}): recomputing")
                shutil.rmtree(folder)
            print(f"[kdx] filling the teacher-output cache once: {folder}")
            tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
            try:
                extra = fill(tmp)
                arrays = {}
                for file in sorted(tmp.glob("*.npy")):
                    array = np.load(file, mmap_mode="r")
                    arrays[file.stem] = {"shape": list(array.shape), "dtype": str(array.dtype),
                                         "sha256": sha256_file(file)}
                write_json_atomic(tmp / MANIFEST, {"format": FORMAT_VERSION, "key": key, "arrays": arrays,
                                                   **extra, "describes": describe})
                os.rename(tmp, folder)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            manifest, why = verify(folder, key)
            if manifest is None:
                raise KdxError(f"the teacher-output cache {folder} failed verification right after filling ({why})",
                               "check the disk (space, a network file system that reorders writes), or run "
                               "with teacher.cache=false")
    return TeacherOutputs(folder, manifest)


# ---- filling ------------------------------------------------------------------------------------
@torch.no_grad()
def fill_arrays(teacher: nn.Module, loader: DataLoader, settings: CacheSettings, token_level: bool,
                max_length: int | None, folder: Path, device: torch.device) -> dict:
    """Runs the teacher over `loader` (id order) and writes idx.npy and logits.npy (or the top-k
    arrays values/indices/tail.npy) into `folder`; returns extra manifest entries."""
    dtype = DTYPES[settings.dtype]
    size = len(loader.dataset)
    was_training, home = teacher.training, next(teacher.parameters()).device
    freeze(teacher).to(device)
    arrays: dict[str, np.ndarray] = {"idx": np.lib.format.open_memmap(folder / "idx.npy", "w+", np.int64, (size,))}
    vocab, start = None, 0

    def array(name: str, kind, shape) -> np.ndarray:
        if name not in arrays:   # a new file is all zeros: positions past a batch's length are defined
            arrays[name] = np.lib.format.open_memmap(folder / f"{name}.npy", "w+", kind, (size, *shape))
        return arrays[name]

    for batch in loader:
        inputs = {k: v.to(device) for k, v in model_inputs(batch).items()}
        out = teacher(**inputs)
        logits = (out.logits if hasattr(out, "logits") else out).float().cpu()
        stop = start + logits.shape[0]
        arrays["idx"][start:stop] = batch["idx"].numpy()
        if not token_level:
            array("logits", dtype, logits.shape[1:])[start:stop] = logits.numpy().astype(dtype)
        else:
            vocab = logits.shape[-1]
            k = min(int(settings.topk), vocab)
            values, indices, tail = topk.compress(logits, k)
            length = logits.shape[1]
            array("values", dtype, (max_length, k))[start:stop, :length] = values.numpy().astype(dtype)
            array("indices", np.int32, (max_length, k))[start:stop, :length] = indices.numpy().astype(np.int32)
            array("tail", np.float32, (max_length,))[start:stop, :length] = tail.numpy()
        start = stop
    for array_ in arrays.values():
        array_.flush()
    del arrays
    teacher.to(home).train(was_training)   # a staged teacher is filled mid-training, on its device
    return {"vocab": vocab, "examples": size}


@dataclass
class CachePlan:
    """Everything a trial's cache is keyed on except the teacher's weights, and how to fill it."""

    cfg: DictConfig
    spec: TaskSpec
    settings: CacheSettings
    loader: DataLoader          # the training split in id order
    describe: dict              # the key's parts that do not depend on the weights

    @classmethod
    def for_trial(cls, cfg: DictConfig, spec: TaskSpec, settings: CacheSettings, datamodule) -> "CachePlan":
        token_level = spec.family in TOKEN_LEVEL
        batch_size = int(cfg.data.eval_batch_size)
        loader = sequential_loader(datamodule, batch_size)
        stored = {"form": "topk" if token_level else "logits", "dtype": settings.dtype,
                  "k": settings.topk if token_level else None, "fill_batch_size": batch_size}
        describe = {"data": data_fingerprint(loader),
                    "tokenizer": tokenizer_identity(getattr(datamodule, "tokenizer", None)),
                    "max_length": cfg.data.get("max_length"), "stored": stored, "family": spec.family}
        return cls(cfg, spec, settings, loader, describe)

    def open(self, teacher: nn.Module) -> TeacherOutputs:
        """The verified cache of `teacher` as it is now, filled first if needed."""
        describe = {"teacher_weights": weights_digest(teacher, length=64), "architecture": architecture(teacher),
                    **self.describe}
        key = digest(describe, length=16)
        folder = Path(self.cfg.paths.cache_dir) / "teacher_outputs" / f"{self.spec.name.replace('/', '_')}-{key}"
        device = accelerator_device(self.cfg.trainer.get("accelerator", "cpu"))
        token_level = self.spec.family in TOKEN_LEVEL
        return ensure(folder, key, {k: v for k, v in describe.items() if k != "architecture"},
                      lambda tmp: fill_arrays(teacher, self.loader, self.settings, token_level,
                                              self.describe["max_length"], tmp, device))


def open_teacher_outputs(cfg: DictConfig, method: Method, spec: TaskSpec, teacher: nn.Module,
                         datamodule) -> TeacherOutputs | StagedTeacherOutputs | None:
    """The trial's teacher-output cache (filled now if needed; a staged teacher's, stage by stage
    as training reaches it), or None where it is off or would not be exact (the reason is printed)."""
    settings = CacheSettings.from_config(cfg)
    why = reason_not_cached(settings, method, spec, datamodule)
    if why is None and method.teacher_stages:
        why = reason_stages_not_cached(settings, method.teacher_stages, teacher_passes(cfg, method, datamodule))
    if why is not None:
        if settings.enabled and method.needs_frozen_teacher:
            print(f"[kdx] teacher-output cache not used: {why}")
        return None
    plan = CachePlan.for_trial(cfg, spec, settings, datamodule)
    if method.teacher_stages:
        return StagedTeacherOutputs(plan, teacher, method)
    return plan.open(teacher)
