"""The Continuation-KD toy (docs/methods.md §3): 1-D regression of a low-frequency sinusoid seen
through high-frequency noise.

    signal(x)   = low_amplitude · sin(2π · low_frequency · x)
    observed(x) = signal(x) + high_amplitude · sin(2π · high_frequency · x) + ε,   ε ~ N(0, noise_std²)

with x uniform in [x_min, x_max]. Training targets are `observed`. The headline split `val` has
the clean `signal` as target, so its MSE says how well a model found the signal rather than the
noise; `val_noisy` is drawn like the training set (a model that fits the wiggle does well there).
Everything is a deterministic function of the knobs in conf/task/synthetic/sinusoid.yaml.
"""

import math

import lightning as L
import numpy as np
import torch

from kdx.errors import KdxError
from kdx.knobs import Count, NonNegative, Positive, Seed
from kdx.tasks.base import Task, TaskSpec
from kdx.tasks.tensor_data import TensorDataModule, TensorSplit


class SinusoidTask(Task):
    def __init__(self, name: str = "synthetic/sinusoid", seed: Seed = 0, train_size: Count = 3000,
                 val_size: Count = 1000, x_min: float = -1.0, x_max: float = 1.0,
                 low_frequency: Positive = 1.0, low_amplitude: NonNegative = 1.0, high_frequency: Positive = 10.0,
                 high_amplitude: NonNegative = 0.25, noise_std: NonNegative = 0.05,
                 metrics=("mse", "pearson"), main_metric: str = "mse", max_length: Count | None = None,
                 data_dir: str | None = None):
        """`max_length` is unused (no tokens); it exists because data.max_length reads it."""
        if data_dir is not None:
            raise KdxError(f"task.data_dir={data_dir!r}: task {name} is generated and reads no files",
                           "drop task.data_dir for this task")
        if not x_min < x_max:
            raise KdxError(f"task.x_min={x_min} must be below task.x_max={x_max}", "swap or widen the interval")
        if min(train_size, val_size) < 2 or noise_std < 0:
            raise KdxError(f"task.train_size={train_size}, val_size={val_size} (need ≥ 2) and "
                           f"noise_std={noise_std} (need ≥ 0) are out of range")
        self.seed = seed
        self.sizes = {"train": train_size, "val": val_size, "val_noisy": val_size}
        self.interval = (x_min, x_max)
        self.low = (low_amplitude, low_frequency)
        self.high = (high_amplitude, high_frequency)
        self.noise_std = noise_std
        self.spec = TaskSpec(name=name, num_labels=1, metrics=list(metrics), main_metric=main_metric,
                             eval_splits=["val", "val_noisy"])

    def training_texts(self):
        raise KdxError(f"task {self.spec.name} has real-valued inputs, no text: the model pair's tokenizer "
                       "has nothing to train on", "use model=mlp")

    def signal(self, x: np.ndarray) -> np.ndarray:
        amplitude, frequency = self.low
        return amplitude * np.sin(2 * math.pi * frequency * x)

    def wiggle(self, x: np.ndarray) -> np.ndarray:
        amplitude, frequency = self.high
        return amplitude * np.sin(2 * math.pi * frequency * x)

    def splits(self) -> dict[str, TensorSplit]:
        if not hasattr(self, "_splits"):
            rng = np.random.default_rng(self.seed)
            self._splits = {}
            for name, size in self.sizes.items():
                x = rng.uniform(*self.interval, size=size)
                if name == "val":
                    y = self.signal(x)
                else:
                    y = self.signal(x) + self.wiggle(x) + rng.normal(0.0, self.noise_std, size=size)
                self._splits[name] = {"x": torch.tensor(x, dtype=torch.float32).unsqueeze(-1),
                                      "labels": torch.tensor(y, dtype=torch.float32),
                                      "idx": torch.arange(size)}
        return self._splits

    def datamodule(self, tokenizer, data_cfg) -> L.LightningDataModule:
        return TensorDataModule(self.splits(), self.spec.eval_splits, data_cfg)
