"""Task metrics with torchmetrics. Names: acc, f1, mcc, pearson, spearman, mse."""

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import Accuracy, F1Score, MatthewsCorrCoef
from torchmetrics.regression import MeanSquaredError, PearsonCorrCoef, SpearmanCorrCoef

from kdx.errors import KdxError
from kdx.tasks.base import TaskSpec

CLASSIFICATION = ("acc", "f1", "mcc")
REGRESSION = ("pearson", "spearman", "mse")


def _metric(name: str, num_labels: int):
    kind = "binary" if num_labels == 2 else "multiclass"
    extra = {} if kind == "binary" else {"num_classes": num_labels}
    if name == "acc":
        return Accuracy(task=kind, **extra, **({} if kind == "binary" else {"average": "micro"}))
    if name == "f1":
        return F1Score(task=kind, **extra, **({} if kind == "binary" else {"average": "macro"}))
    if name == "mcc":
        return MatthewsCorrCoef(task=kind, **extra)
    if name == "pearson":
        return PearsonCorrCoef()
    if name == "spearman":
        return SpearmanCorrCoef()
    if name == "mse":
        return MeanSquaredError()
    raise KdxError(f"unknown metric {name!r}", f"use one of {list(CLASSIFICATION + REGRESSION)}")


def build_metrics(spec: TaskSpec, split: str) -> MetricCollection:
    allowed = REGRESSION if spec.is_regression else CLASSIFICATION
    for name in spec.metrics:
        if name not in allowed:
            raise KdxError(f"metric {name!r} does not apply to task {spec.name}",
                           f"use metrics from {list(allowed)}")
    return MetricCollection({name: _metric(name, spec.num_labels) for name in spec.metrics},
                            prefix=f"{split}/")


def predictions(logits: torch.Tensor, regression: bool) -> torch.Tensor:
    """What the metrics compare with the labels: the output (regression) or the argmax class."""
    return logits.squeeze(-1).float() if regression else logits.argmax(-1)
