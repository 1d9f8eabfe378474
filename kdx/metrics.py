"""Task metrics with torchmetrics. Names: acc, f1, mcc (classification), pearson, spearman, mse
(regression), token_acc and perplexity (language_modeling, generation: next-token accuracy and
exp of the mean next-token cross-entropy, both over labelled tokens, summed over the whole split
before dividing)."""

import torch
import torch.nn.functional as F
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import Accuracy, F1Score, MatthewsCorrCoef
from torchmetrics.regression import MeanSquaredError, PearsonCorrCoef, SpearmanCorrCoef

from kdx.errors import KdxError
from kdx.losses import IGNORE_INDEX
from kdx.tasks.base import TaskSpec

CLASSIFICATION = ("acc", "f1", "mcc")
REGRESSION = ("pearson", "spearman", "mse")
TOKEN = ("token_acc", "perplexity")
ALLOWED = {"classification": CLASSIFICATION, "regression": REGRESSION,
           "language_modeling": TOKEN, "generation": TOKEN, "span_prediction": (), "question_answering": ()}


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
        return TokenAccuracy()
    if name == "perplexity":
        return Perplexity()
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


class TokenAccuracy(Metric):
    """Share of labelled tokens whose argmax prediction is the label (no class count needed: the
    vocabulary is the model's)."""

    def __init__(self):
        super().__init__()
        self.add_state("correct", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        keep = labels != IGNORE_INDEX
        self.correct += (logits.argmax(-1)[keep] == labels[keep]).sum()
        self.total += keep.sum()

    def compute(self) -> torch.Tensor:
        return self.correct.float() / self.total.clamp(min=1)


class Perplexity(Metric):
    """exp(total next-token negative log-likelihood / number of labelled tokens)."""

    higher_is_better = False

    def __init__(self):
        super().__init__()
        self.add_state("nll", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.nll += F.cross_entropy(logits.flatten(0, -2).float(), labels.flatten(), ignore_index=IGNORE_INDEX,
                                    reduction="sum").double()
        self.total += (labels != IGNORE_INDEX).sum()

    def compute(self) -> torch.Tensor:
        return torch.exp(self.nll / self.total.clamp(min=1))


def predictions(logits: torch.Tensor, family: str) -> torch.Tensor:
    """What the metrics compare with the labels: the output (regression), the argmax class, or for
    token-level language models the logits themselves (their metrics need the distribution)."""
    if family == "regression":
        return logits.squeeze(-1).float()
    if family in ("language_modeling", "generation"):
        return logits
    return logits.argmax(-1)


class GroupedUpdates:
    """One evaluation split's per-batch loss and metric inputs, handed to the torchmetrics objects
    in groups of up to `every` batches instead of one `update` per batch: an update costs a few
    tenths of a millisecond of Python, a tenth of a small model's evaluation batch (kdx/bench).
    The accumulated states (sums, counts, confusion matrices) are the same. Only per-example
    predictions are grouped (classes, regression outputs); token-level logits go straight through,
    since holding many batches of them would cost memory."""

    def __init__(self, loss: Metric, metrics: MetricCollection | None, group_predictions: bool, every: int = 64):
        self.loss, self.metrics, self.group_predictions, self.every = loss, metrics, group_predictions, every
        self.losses, self.weights, self.predictions, self.targets = [], [], [], []

    def add(self, loss: torch.Tensor, weight: int, predicted: torch.Tensor | None, target: torch.Tensor) -> None:
        self.losses.append(loss.detach().float())
        self.weights.append(weight)
        if self.metrics is not None:
            if self.group_predictions:
                self.predictions.append(predicted)
                self.targets.append(target)
            else:
                self.metrics.update(predicted, target)
        if len(self.losses) >= self.every:
            self.flush()

    def flush(self) -> None:
        """Hands everything added so far to the metrics (call before computing them)."""
        if self.losses:
            values = torch.stack(self.losses)
            self.loss.update(values, weight=torch.tensor(self.weights, dtype=values.dtype, device=values.device))
        if self.predictions:
            self.metrics.update(torch.cat(self.predictions), torch.cat(self.targets))
        self.losses, self.weights, self.predictions, self.targets = [], [], [], []
