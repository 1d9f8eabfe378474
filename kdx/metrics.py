"""Task metrics with torchmetrics. Names: acc, f1, mcc (classification), pearson, spearman, mse
(regression), token_acc (language_modeling, generation: next-token accuracy over labelled tokens)."""

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import Accuracy, F1Score, MatthewsCorrCoef
from torchmetrics.regression import MeanSquaredError, PearsonCorrCoef, SpearmanCorrCoef

from kdx.errors import KdxError
from kdx.losses import IGNORE_INDEX
from kdx.tasks.base import TaskSpec

CLASSIFICATION = ("acc", "f1", "mcc")
REGRESSION = ("pearson", "spearman", "mse")
TOKEN = ("token_acc",)
ALLOWED = {"classification": CLASSIFICATION, "regression": REGRESSION,
           "language_modeling": TOKEN, "generation": TOKEN, "span_prediction": ()}


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
    if name == "token_acc":
        return Accuracy(task="multiclass", num_classes=num_labels, ignore_index=IGNORE_INDEX, average="micro")
    raise KdxError(f"unknown metric {name!r}", f"use one of {list(CLASSIFICATION + REGRESSION + TOKEN)}")


def build_metrics(spec: TaskSpec, split: str) -> MetricCollection:
    allowed = ALLOWED[spec.family]
    for name in spec.metrics:
        if name not in allowed:
            raise KdxError(f"metric {name!r} does not apply to task {spec.name} ({spec.family})",
                           f"use metrics from {list(allowed)}" if allowed else
                           "this family's metrics are computed by its task (metrics: [])")
    return MetricCollection({name: _metric(name, spec.num_labels) for name in spec.metrics},
                            prefix=f"{split}/")


def predictions(logits: torch.Tensor, family: str) -> torch.Tensor:
    """What the metrics compare with the labels: the output (regression) or the argmax class
    (per token for token-level families)."""
    return logits.squeeze(-1).float() if family == "regression" else logits.argmax(-1)
