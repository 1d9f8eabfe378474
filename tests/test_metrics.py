"""Grouped metric updates (kdx.metrics.GroupedUpdates) give the same evaluation as one update per
batch, whatever the group size, and pass token-level logits straight through."""

import pytest
import torch
from torchmetrics import MeanMetric

from kdx.metrics import GroupedUpdates, build_metrics
from kdx.tasks.base import TaskSpec


def batches(seed: int, sizes=(32, 32, 32, 7), classes: int = 3):
    gen = torch.Generator().manual_seed(seed)
    for n in sizes:
        yield torch.rand((), generator=gen), n, torch.randint(classes, (n,), generator=gen), \
            torch.randint(classes, (n,), generator=gen)


@pytest.mark.parametrize("every", [1, 2, 64])
def test_grouped_updates_equal_one_update_per_batch(every):
    spec = TaskSpec(name="toy", num_labels=3, metrics=["acc", "f1", "mcc"], main_metric="acc")
    per_batch_loss, per_batch_metrics = MeanMetric(), build_metrics(spec, "val")
    for loss, n, predicted, target in batches(0):
        per_batch_loss.update(loss, weight=n)
        per_batch_metrics.update(predicted, target)
    grouped = GroupedUpdates(MeanMetric(), build_metrics(spec, "val"), group_predictions=True, every=every)
    for loss, n, predicted, target in batches(0):
        grouped.add(loss, n, predicted, target)
    grouped.flush()
    assert grouped.loss.compute() == pytest.approx(float(per_batch_loss.compute()), rel=1e-6)
    expected = per_batch_metrics.compute()
    assert {k: float(v) for k, v in grouped.metrics.compute().items()} == {k: float(v) for k, v in expected.items()}


def test_token_level_predictions_are_not_held():
    lm = TaskSpec(name="lm", num_labels=11, metrics=["token_acc"], main_metric="token_acc", family="language_modeling")
    grouped = GroupedUpdates(MeanMetric(), build_metrics(lm, "val"), group_predictions=False)
    logits, labels = torch.randn(2, 5, 11), torch.randint(11, (2, 5))
    grouped.add(torch.tensor(1.0), 2, logits, labels)
    assert not grouped.predictions and grouped.metrics["val/token_acc"].update_count == 1
