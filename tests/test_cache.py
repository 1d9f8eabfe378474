"""The teacher-output cache (kdx/cache.py) and its top-k form (kdx/topk.py): cached and live
teachers train the same student; a corrupted or mismatched cache is rebuilt; two processes that
fill one cache at once leave one valid copy."""

import json
import multiprocessing
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from kdx import cache, topk
from kdx.distill import DistillationModule
from kdx.losses import kl_per_item
from kdx.methods.kd import KD
from kdx.models.mlp import MLP
from kdx.tasks.base import TaskSpec
from kdx.tasks.tensor_data import TensorDataModule

SPEC = TaskSpec(name="toy", num_labels=3, metrics=["acc"], main_metric="acc")


# ---- top-k logits + tail mass ---------------------------------------------------------------------
def test_topk_keeps_the_top_probabilities_and_the_tail_mass():
    logits = torch.randn(2, 3, 40, generator=torch.Generator().manual_seed(0)) * 3
    values, indices, tail = topk.compress(logits, 5)
    dense = topk.expand(values, indices, tail, 40)
    p, q = logits.softmax(-1), dense.softmax(-1)
    assert torch.allclose(q.gather(-1, indices), p.gather(-1, indices), atol=1e-6)
    in_top = torch.zeros_like(p, dtype=torch.bool).scatter(-1, indices, True)
    assert torch.allclose((q * ~in_top).sum(-1), (p * ~in_top).sum(-1), atol=1e-6)
    # the tail mass is spread evenly over the 35 other tokens
    tail_q = q[~in_top].reshape(2, 3, 35)
    assert torch.allclose(tail_q, tail_q[..., :1].expand_as(tail_q), atol=1e-7)


def test_topk_kd_loss_is_the_documented_formula_and_exact_for_k_equal_v():
    gen = torch.Generator().manual_seed(1)
    teacher, student = torch.randn(4, 12, generator=gen) * 2, torch.randn(4, 12, generator=gen)
    k, vocab = 3, 12
    values, indices, tail = topk.compress(teacher, k)
    kl = kl_per_item(student, topk.expand(values, indices, tail, vocab))   # what every KD loss reads
    # by hand: top-k terms with the teacher's own probabilities, tail mass m shared evenly
    p, log_q = teacher.softmax(-1), F.log_softmax(student, -1)
    expected = []
    for row in range(4):
        top = indices[row].tolist()
        rest = [j for j in range(vocab) if j not in top]
        m = float(p[row, rest].sum())
        value = sum(float(p[row, i]) * (np.log(float(p[row, i])) - float(log_q[row, i])) for i in top)
        value += sum(m / len(rest) * (np.log(m / len(rest)) - float(log_q[row, j])) for j in rest)
        expected.append(value)
    assert torch.allclose(kl, torch.tensor(expected, dtype=kl.dtype), atol=1e-5)
    full = topk.expand(*topk.compress(teacher, vocab), vocab)
    assert torch.equal(full.softmax(-1), teacher.softmax(-1))


# ---- a tiny vector task to fill caches from -----------------------------------------------------------
def toy_datamodule(size: int = 60) -> TensorDataModule:
    gen = torch.Generator().manual_seed(0)
    split = {"x": torch.randn(size, 4, generator=gen), "labels": torch.randint(0, 3, (size,), generator=gen),
             "idx": torch.arange(size)}
    cfg = OmegaConf.create({"batch_size": 8, "eval_batch_size": 16, "num_workers": 0})
    return TensorDataModule({"train": split, "val": split}, ["val"], cfg)


def toy_teacher() -> MLP:
    torch.manual_seed(0)
    return MLP(4, [16], 3)


def toy_config(cache_dir: Path, **teacher) -> OmegaConf:
    return OmegaConf.create({"teacher": {"cache": True, "cache_dtype": "float32", "cache_topk": None, **teacher},
                             "data": {"eval_batch_size": 16, "max_length": None},
                             "paths": {"cache_dir": str(cache_dir)}, "trainer": {"accelerator": "cpu"}})


def test_cached_outputs_are_the_teachers_logits_by_example_id(tmp_path):
    teacher, dm = toy_teacher(), toy_datamodule()
    outputs = cache.open_teacher_outputs(toy_config(tmp_path), KD(), SPEC, teacher, dm)
    ids = torch.tensor([7, 3, 59, 0, 12, 44, 30, 21])   # ≥ 8 rows: the same matmul kernel as the fill's
    batch = {"x": dm.splits["train"]["x"][ids], "idx": ids}
    with torch.no_grad():
        live = teacher(batch["x"])
    assert torch.equal(outputs.outputs(batch, torch.device("cpu")).logits, live)
    half = cache.open_teacher_outputs(toy_config(tmp_path, cache_dtype="float16"), KD(), SPEC, teacher, dm)
    assert half.folder != outputs.folder                     # what is stored is part of the key
    assert torch.allclose(half.outputs(batch, torch.device("cpu")).logits, live, rtol=1e-3, atol=1e-3)


def test_the_cache_is_used_only_where_it_is_exact():
    dm, settings = toy_datamodule(), cache.CacheSettings()
    assert cache.reason_not_cached(settings, KD(), SPEC, dm) is None
    assert "teacher.cache=false" in cache.reason_not_cached(cache.CacheSettings(enabled=False), KD(), SPEC, dm)
    from kdx.methods.feature_kd import FeatureKD
    from kdx.methods.prokd import ProKD
    assert "hidden states" in cache.reason_not_cached(settings, FeatureKD(), SPEC, dm)
    assert "changes the teacher's weights" in cache.reason_not_cached(settings, ProKD(), SPEC, dm)
    dm.train_inputs_vary = True
    assert "augmented" in cache.reason_not_cached(settings, KD(), SPEC, dm)
    lm = TaskSpec(name="lm", num_labels=50, metrics=[], main_metric="loss", family="language_modeling")
    assert "cache_topk" in cache.reason_not_cached(settings, KD(), lm, toy_datamodule())
    assert cache.reason_not_cached(cache.CacheSettings(topk=8), KD(), lm, toy_datamodule()) is None


def test_a_corrupted_or_mismatched_cache_is_detected_and_rebuilt(tmp_path, capsys):
    teacher, dm, cfg = toy_teacher(), toy_datamodule(), toy_config(tmp_path)
    first = cache.open_teacher_outputs(cfg, KD(), SPEC, teacher, dm)
    good = np.array(first.arrays["logits"])
    logits_file = first.folder / "logits.npy"

    raw = bytearray(logits_file.read_bytes())           # flip one byte of the data
    raw[-5] ^= 0xFF
    logits_file.write_bytes(bytes(raw))
    assert "checksum" in cache.verify(first.folder, first.manifest["key"])[1]
    rebuilt = cache.open_teacher_outputs(cfg, KD(), SPEC, teacher, dm)
    assert "failed verification" in capsys.readouterr().out
    assert np.array_equal(np.array(rebuilt.arrays["logits"]), good)

    manifest = json.loads((first.folder / cache.MANIFEST).read_text())   # a manifest for another key
    manifest["key"] = "0" * 16
    (first.folder / cache.MANIFEST).write_text(json.dumps(manifest))
    logits_file.write_bytes(logits_file.read_bytes()[:-40])              # and a truncated file
    assert cache.verify(first.folder, first.manifest["key"])[0] is None
    rebuilt = cache.open_teacher_outputs(cfg, KD(), SPEC, teacher, dm)
    assert np.array_equal(np.array(rebuilt.arrays["logits"]), good)
    assert cache.verify(first.folder, first.manifest["key"])[0] is not None

    with torch.no_grad():                                # other weights: another key, another folder
        teacher.net[0].weight.add_(1.0)
    assert cache.open_teacher_outputs(cfg, KD(), SPEC, teacher, dm).folder != first.folder


def fill_in_another_process(cache_dir: str, log: str, queue) -> None:
    """One of two racing trials: fills (or reads) the cache; each fill is noted in `log`."""
    torch.set_num_threads(1)
    fill = cache.fill_arrays

    def noted_fill(*args, **kwargs):
        with open(log, "a") as f:
            f.write("fill\n")
        time.sleep(0.5)                  # a slow fill: the other process arrives while it runs
        return fill(*args, **kwargs)

    cache.fill_arrays = noted_fill
    outputs = cache.open_teacher_outputs(toy_config(Path(cache_dir)), KD(), SPEC, toy_teacher(), toy_datamodule(2000))
    queue.put((str(outputs.folder), np.array(outputs.arrays["logits"]).tolist()))


def test_two_processes_filling_one_cache_leave_one_valid_copy(tmp_path):
    context = multiprocessing.get_context("fork")   # two independent processes, without re-importing torch
    queue, log = context.Queue(), tmp_path / "fills.log"
    workers = [context.Process(target=fill_in_another_process, args=(str(tmp_path), str(log), queue))
               for _ in range(2)]
    for w in workers:
        w.start()
    results = [queue.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    assert log.read_text().count("fill") == 1
    (folder_a, logits_a), (folder_b, logits_b) = results
    assert folder_a == folder_b and logits_a == logits_b
    entries = [p.name for p in (tmp_path / "teacher_outputs").iterdir() if not p.name.endswith(".lock")]
    assert entries == [Path(folder_a).name]                    # no half-filled temporary folder left
    manifest = json.loads((Path(folder_a) / cache.MANIFEST).read_text())
    assert cache.verify(Path(folder_a), manifest["key"])[0] is not None


# ---- whole trials ----------------------------------------------------------------------------------------
# The MLP's per-example outputs do not depend on the batch they are computed in (every batch here
# has >= 8 rows), so cached and live teachers give the same bits. The tiny BERT's do, in the last
# bits: its attention reductions run over the batch's padded length (measured |Δ logit| ~ 2e-8).
VECTOR_TRIAL = ["method=kd", "task=synthetic/sinusoid", "task.train_size=520", "task.val_size=200",
                "trainer.max_epochs=2", "model.teacher_epochs=2", "seed=3"]
TEXT_TRIAL = ["method=kd", "task.train_size=240", "task.val_size=120", "trainer.max_epochs=2",
              "model.teacher_epochs=1", "seed=3"]


@pytest.mark.parametrize("trial", [VECTOR_TRIAL, TEXT_TRIAL], ids=["mlp", "tiny-bert"])
def test_cached_and_live_teacher_train_the_same_student(run_kdx, tmp_path, monkeypatch, trial):
    live_calls = []
    live_forward = DistillationModule.teacher_forward

    def counted(self, **inputs):
        live_calls.append(1)
        return live_forward(self, **inputs)

    monkeypatch.setattr(DistillationModule, "teacher_forward", counted)
    shared = tmp_path / "cache"
    live = run_kdx(*trial, "teacher.cache=false", tmp_path=tmp_path / "live", cache_dir=shared)
    assert live_calls and not (shared / "teacher_outputs").exists()
    live_calls.clear()
    cached = run_kdx(*trial, "teacher.cache=true", tmp_path=tmp_path / "cached", cache_dir=shared)
    assert not live_calls                                       # every teacher output came from the cache
    assert len(list((shared / "teacher_outputs").glob("*/manifest.json"))) == 1
    timing = cached["timing"]
    assert 0 < timing["trial_start_to_first_step_s"] <= timing["process_start_to_first_step_s"]
    if trial is VECTOR_TRIAL:
        assert cached["metrics"] == live["metrics"]             # bit-identical
    else:
        assert cached["metrics"].keys() == live["metrics"].keys()
        for name, value in live["metrics"].items():
            assert cached["metrics"][name] == pytest.approx(value, abs=1e-5), name


# ---- staged teachers: Pro-KD's replay of the teacher's trajectory ------------------------------------
def test_a_staged_teacher_is_cached_per_stage_only_where_it_pays():
    auto, always, never = (cache.CacheSettings(trajectory=mode) for mode in ("auto", "always", "never"))
    assert cache.reason_stages_not_cached(auto, stages=3, passes=3) is None       # epoch-end trajectory
    why = cache.reason_stages_not_cached(auto, stages=12, passes=3)
    assert "12 stages" in why and "4.0x" in why and "cache_trajectory=always" in why
    assert cache.reason_stages_not_cached(always, stages=12, passes=3) is None
    assert cache.reason_stages_not_cached(never, stages=1, passes=3) == "teacher.cache_trajectory=never"
    with pytest.raises(Exception, match="cache_trajectory"):
        cache.CacheSettings.from_config(OmegaConf.create({"teacher": {"cache_trajectory": "yes"}}))


PROKD_TRIAL = [*VECTOR_TRIAL[1:], "method=prokd"]   # 2 teacher epochs: T^(1), T^(2); 2 student epochs


def test_prokd_reads_one_cache_per_trajectory_checkpoint_and_trains_the_same_student(
        run_kdx, tmp_path, monkeypatch, capsys):
    live_calls = []
    live_forward = DistillationModule.teacher_forward
    monkeypatch.setattr(DistillationModule, "teacher_forward",
                        lambda self, **inputs: live_calls.append(1) or live_forward(self, **inputs))
    shared = tmp_path / "cache"
    live = run_kdx(*PROKD_TRIAL, "teacher.cache=false", tmp_path=tmp_path / "live", cache_dir=shared)
    assert live_calls and not (shared / "teacher_outputs").exists()
    live_calls.clear()
    capsys.readouterr()
    cached = run_kdx(*PROKD_TRIAL, tmp_path=tmp_path / "cached", cache_dir=shared)
    assert not live_calls                                       # every stage's outputs came from its cache
    assert len(list((shared / "teacher_outputs").glob("*/manifest.json"))) == 2   # one per checkpoint
    assert capsys.readouterr().out.count("filling the teacher-output cache") == 2
    assert cached["metrics"] == live["metrics"]                 # bit-identical (MLP pair, fp32)
    # a knob variant on the same trajectory fills nothing
    run_kdx(*PROKD_TRIAL, "method.temperature=4", tmp_path=tmp_path / "variant", cache_dir=shared)
    assert not live_calls and "filling the teacher-output cache" not in capsys.readouterr().out
    assert len(list((shared / "teacher_outputs").glob("*/manifest.json"))) == 2


def test_a_dense_trajectory_keeps_the_live_teacher_unless_asked(run_kdx, tmp_path, capsys):
    dense = [*PROKD_TRIAL, "teacher_training.trajectory_every_n_steps=3"]
    run_kdx(*dense, tmp_path=tmp_path / "auto", cache_dir=tmp_path / "cache")
    out = capsys.readouterr().out
    assert "teacher-output cache not used" in out and "cache_trajectory=always" in out
    assert not (tmp_path / "cache" / "teacher_outputs").exists()
    run_kdx(*dense, "teacher.cache_trajectory=always", tmp_path=tmp_path / "always", cache_dir=tmp_path / "cache")
    stages = len(list((tmp_path / "cache" / "teacher_outputs").glob("*/manifest.json")))
    assert stages > 2                                           # every distinct checkpoint of the dense trajectory
