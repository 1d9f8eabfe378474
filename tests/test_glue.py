"""GLUE loading from the original TSV layout, its errors, metrics per task, and one trial end to end.

The TSV fixtures are written here in the official GLUE layout (full headers, MRPC's byte-order
mark, headerless CoLA, bare quotes in text); expected label ids are spelled out by hand from the
hub's ClassLabel order.
"""

import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from kdx.__main__ import config_dir
from kdx.errors import KdxError
from kdx.metrics import build_metrics
from kdx.tasks.glue import LAYOUTS, GlueTask, read_glue_tsv
from tests.conftest import compose_trial

REAL_GLUE = Path("/work/shared/data/glue")
GLUE_TASKS = ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]

# Official headers (MNLI train has 12 columns, its dev files 16).
MNLI_TRAIN = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
              "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"]
MNLI_DEV = MNLI_TRAIN[:-1] + ["label2", "label3", "label4", "label5", "gold_label"]
HEADERS = {
    "sst2": ["sentence", "label"],
    "mrpc": ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
    "stsb": ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1",
             "sentence2", "score"],
    "qqp": ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
    "qnli": ["index", "question", "sentence", "label"],
    "rte": ["index", "sentence1", "sentence2", "label"],
    "wnli": ["index", "sentence1", "sentence2", "label"],
}
# header name of (first text, second text, label) per task
ROLES = {
    "sst2": ("sentence", None, "label"), "mrpc": ("#1 String", "#2 String", "Quality"),
    "stsb": ("sentence1", "sentence2", "score"), "qqp": ("question1", "question2", "is_duplicate"),
    "mnli": ("sentence1", "sentence2", "gold_label"), "qnli": ("question", "sentence", "label"),
    "rte": ("sentence1", "sentence2", "label"), "wnli": ("sentence1", "sentence2", "label"),
}
# (label as written in the TSV, label id on the hub)
LABELS = {
    "cola": [("0", 0), ("1", 1)], "sst2": [("0", 0), ("1", 1)], "mrpc": [("0", 0), ("1", 1)],
    "stsb": [("3.800", 3.8), ("0.000", 0.0), ("5.000", 5.0), ("1.25", 1.25)],
    "qqp": [("0", 0), ("1", 1)], "wnli": [("0", 0), ("1", 1)],
    "mnli": [("entailment", 0), ("neutral", 1), ("contradiction", 2)],
    "qnli": [("entailment", 0), ("not_entailment", 1)], "rte": [("entailment", 0), ("not_entailment", 1)],
}


def official_line(config: str, header: list[str] | None, a: str, b: str | None, label: str) -> str:
    if config == "cola":  # source, label, original acceptability mark, sentence
        return "\t".join(["gj04", label, "" if label == "1" else "*", a])
    text_a, text_b, label_col = ROLES[config]
    values = {name: f"x{i}" for i, name in enumerate(header)}  # filler in the other columns
    values.update({text_a: a, label_col: label})
    if text_b is not None:
        values[text_b] = b
    return "\t".join(values[name] for name in header)


def split_rows(config: str, split: str, n: int) -> list[tuple[str, str | None, str, float | int]]:
    """(text_a, text_b, written label, expected id) rows; text holds bare quotes and apostrophes."""
    pair = config not in ("cola", "sst2")
    labels = LABELS[config]
    rows = []
    for i in range(n):
        written, expected = labels[i % len(labels)]
        a = f'{split} {i}: he said "it\'s fine'
        b = f'the "other" sentence {i}"' if pair else None
        rows.append((a, b, written, expected))
    return rows


def write_split(path: Path, config: str, header: list[str] | None, rows, bom: bool = False) -> None:
    lines = [] if header is None else ["\t".join(header)]
    lines += [official_line(config, header, a, b, label) for a, b, label, _ in rows]
    path.write_text(("\ufeff" if bom else "") + "\n".join(lines) + "\n", encoding="utf-8")


def write_glue(folder: Path, config: str, n_train: int = 6, n_dev: int = 4) -> dict[str, list]:
    """Official-layout TSVs for `config` in `folder`; returns the rows written per split."""
    folder.mkdir(parents=True, exist_ok=True)
    bom = config == "mrpc"
    files = {"train": ("train.tsv", MNLI_TRAIN)} if config == "mnli" else {"train": ("train.tsv", HEADERS.get(config))}
    if config == "mnli":
        files.update({"val": ("dev_matched.tsv", MNLI_DEV), "val_mm": ("dev_mismatched.tsv", MNLI_DEV)})
    else:
        files["val"] = ("dev.tsv", HEADERS.get(config))
    written = {}
    for split, (name, header) in files.items():
        written[split] = split_rows(config, split, n_train if split == "train" else n_dev)
        write_split(folder / name, config, header, written[split], bom=bom)
    return written


# --- parsing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", GLUE_TASKS)
def test_every_task_parses_its_official_tsv_layout(tmp_path, config):
    written = write_glue(tmp_path, config)
    task = GlueTask(config=config, data_dir=str(tmp_path))
    splits = task.splits()
    assert set(splits) == set(written)
    assert task.spec.eval_splits == (["val", "val_mm"] if config == "mnli" else ["val"])
    for split, rows in written.items():
        got = splits[split]
        assert [ex.idx for ex in got] == list(range(len(rows)))
        assert [(ex.text_a, ex.text_b, ex.label) for ex in got] == [(a, b, y) for a, b, _, y in rows]
        types = {type(ex.label) for ex in got}
        assert types == ({float} if config == "stsb" else {int})
    expected_labels = {"mnli": 3, "stsb": 1}.get(config, 2)
    assert task.spec.num_labels == expected_labels


def test_mrpc_byte_order_mark_does_not_hide_the_quality_column(tmp_path):
    write_glue(tmp_path, "mrpc")
    assert (tmp_path / "dev.tsv").read_bytes().startswith(b"\xef\xbb\xbf")
    assert [ex.label for ex in GlueTask(config="mrpc", data_dir=str(tmp_path)).splits()["val"]] == [0, 1, 0, 1]


def test_reduced_mnli_file_is_read_by_header_names(tmp_path):
    path = tmp_path / "dev_matched.tsv"
    path.write_text("index\tsentence1\tsentence2\tgold_label\n0\tA man "
                    "sleeps.\tA \"person\" rests.\tentailment\n1\tx\ty\tcontradiction\n", encoding="utf-8")
    examples = read_glue_tsv(path, LAYOUTS["mnli"])
    assert [(ex.text_a, ex.text_b, ex.label) for ex in examples] == [
        ("A man sleeps.", 'A "person" rests.', 0), ("x", "y", 2)]


def test_max_train_examples_keeps_the_first_rows(tmp_path):
    written = write_glue(tmp_path, "sst2", n_train=10)
    task = GlueTask(config="sst2", data_dir=str(tmp_path), max_train_examples=3)
    assert [ex.text_a for ex in task.splits()["train"]] == [a for a, *_ in written["train"][:3]]
    assert len(task.splits()["val"]) == 4  # evaluation splits are never cut


# --- the real GLUE files (published counts) -----------------------------------------------------

REAL_COUNTS = [
    ("sst2", "SST-2/train.tsv", {0: 29780, 1: 37569}),
    ("mrpc", "MRPC/dev.tsv", {0: 129, 1: 279}),
    ("cola", "CoLA/dev.tsv", {0: 322, 1: 721}),
    ("mnli", "MNLI/dev_matched.tsv", {0: 3479, 1: 3123, 2: 3213}),
]


@pytest.mark.parametrize("config,file,counts", REAL_COUNTS, ids=[c[0] for c in REAL_COUNTS])
def test_real_glue_files_match_the_published_counts(config, file, counts):
    path = REAL_GLUE / file
    if not path.exists():
        pytest.skip(f"{path} not present")
    labels = Counter(ex.label for ex in read_glue_tsv(path, LAYOUTS[config]))
    assert dict(labels) == counts


# --- errors ---------------------------------------------------------------------------------------


def test_missing_data_dir(tmp_path):
    with pytest.raises(KdxError, match="does not exist") as err:
        GlueTask(config="rte", data_dir=str(tmp_path / "nowhere")).splits()
    assert "task.data_dir" in str(err.value) and "train.tsv" in str(err.value)


def test_data_dir_without_the_split_file_names_it(tmp_path):
    write_glue(tmp_path, "mnli")
    (tmp_path / "dev_mismatched.tsv").unlink()
    with pytest.raises(KdxError, match="dev_mismatched.tsv") as err:
        GlueTask(config="mnli", data_dir=str(tmp_path)).splits()
    assert "lacks dev_mismatched.tsv (GLUE MNLI needs train.tsv, dev_matched.tsv, dev_mismatched.tsv)" in err.value.problem


def test_parent_glue_folder_suggests_the_task_folder(tmp_path):
    write_glue(tmp_path / "SST-2", "sst2")
    with pytest.raises(KdxError, match="train.tsv") as err:
        GlueTask(config="sst2", data_dir=str(tmp_path)).splits()
    assert f"task.data_dir={tmp_path / 'SST-2'}" in err.value.fix


def _corrupt(path: Path, line: int, new_text: str) -> None:
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[line - 1] = new_text
    path.write_text("\n".join(lines), encoding="utf-8")


@pytest.mark.parametrize("config,bad_line,message", [
    ("rte", "0\tonly two columns", "has 2 tab-separated columns, expected 4"),
    ("cola", "gj04\t1\tno mark column", "has 3 tab-separated columns, expected 4"),
    ("sst2", "a sentence\tpositive", "label 'positive' is not an integer"),
    ("wnli", "3\ta\tb\t2", "label 2 is outside 0..1"),
    ("mnli", "\t".join(["7"] * 11 + ["neutrall"]), "label 'neutrall' is not one of"),
    ("stsb", "\t".join(["1"] * 9 + ["high"]), "score 'high' is not a number"),
])
def test_malformed_row_names_file_and_line(tmp_path, config, bad_line, message):
    write_glue(tmp_path, config)
    train = tmp_path / "train.tsv"
    line = 4 if config != "cola" else 3  # 1-based; CoLA has no header
    _corrupt(train, line, bad_line)
    with pytest.raises(KdxError, match="malformed row") as err:
        GlueTask(config=config, data_dir=str(tmp_path)).splits()
    assert f"{train}, line {line}:" in err.value.problem
    assert message in err.value.problem


def test_header_without_the_needed_column(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_text("index\tsentence1\tsentence2\n0\ta\tb\n", encoding="utf-8")
    with pytest.raises(KdxError, match="header lacks") as err:
        read_glue_tsv(path, LAYOUTS["rte"])
    assert "'label'" in err.value.problem and f"{path}, line 1" in err.value.problem


def test_unreachable_hub_names_the_dataset_and_the_data_dir_way_round(tmp_path, monkeypatch):
    import datasets
    import huggingface_hub.constants

    # Offline and an empty cache: load_dataset must fail at once (no retries, no cached copy).
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True, raising=False)
    for name, value in {"HF_HUB_OFFLINE": True, "HF_DATASETS_OFFLINE": True,
                        "HF_DATASETS_CACHE": tmp_path / "hf" / "datasets",
                        "HF_CACHE_HOME": str(tmp_path / "hf")}.items():
        if hasattr(datasets.config, name):
            monkeypatch.setattr(datasets.config, name, value)
    with pytest.raises(KdxError) as err:
        GlueTask(config="rte").splits()
    assert "'nyu-mll/glue', config 'rte'" in err.value.problem
    assert "task.data_dir=<folder with the GLUE TSVs>" in err.value.fix


# --- configs and metrics --------------------------------------------------------------------------

HEADLINE = {"cola": "mcc", "sst2": "acc", "mrpc": "f1", "stsb": "pearson", "qqp": "f1", "mnli": "acc",
            "qnli": "acc", "rte": "acc", "wnli": "acc"}


def composed_task(config: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"task=glue/{config}"])
    return cfg, instantiate(cfg.task, _recursive_=False)


@pytest.mark.parametrize("config", GLUE_TASKS)
def test_config_metrics_per_task(config):
    cfg, task = composed_task(config)
    assert cfg.task.name == f"glue/{config}" and cfg.task.data_dir is None
    assert cfg.task.max_length == 128 and cfg.task.hub_id == "nyu-mll/glue" and cfg.task.max_train_examples is None
    spec = task.spec
    assert spec.main_metric == HEADLINE[config]
    assert spec.main_metric_name == f"val/{HEADLINE[config]}"
    names = {f"{split}/{m}" for split in spec.eval_splits for m in spec.metrics}
    must = {"mrpc": {"val/f1", "val/acc"}, "qqp": {"val/f1", "val/acc"}, "stsb": {"val/pearson", "val/spearman"},
            "mnli": {"val/acc", "val_mm/acc"}}.get(config, {f"val/{HEADLINE[config]}"})
    assert must <= names
    built = set()
    for split in spec.eval_splits:
        built |= set(build_metrics(spec, split).keys())
    assert built == names


def test_glue_f1_is_on_the_positive_class_and_mcc_by_formula():
    _, mrpc = composed_task("mrpc")
    preds = torch.tensor([1, 1, 0, 0, 1, 0, 1, 1])
    labels = torch.tensor([1, 0, 0, 1, 1, 0, 1, 0])
    tp, fp, fn, tn = 3, 2, 1, 2
    values = build_metrics(mrpc.spec, "val")(preds, labels)
    assert values["val/f1"].item() == pytest.approx(2 * tp / (2 * tp + fp + fn))
    _, cola = composed_task("cola")
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert build_metrics(cola.spec, "val")(preds, labels)["val/mcc"].item() == pytest.approx(mcc, abs=1e-6)


# --- one trial end to end -------------------------------------------------------------------------


def test_kd_trial_on_stsb_tsv_files(tmp_path, run_kdx):
    data = tmp_path / "STS-B"
    write_glue(data, "stsb", n_train=40, n_dev=12)
    results = run_kdx("method=kd", "task=glue/stsb", f"task.data_dir={data}", "model=tiny",
                      "trainer.max_steps=3", "model.teacher_epochs=1", tmp_path=tmp_path)
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk["status"] == "completed" and results["status"] == "completed"
    assert on_disk["task"] == "glue/stsb" and on_disk["main_metric"]["name"] == "val/pearson"
    assert {"val/pearson", "val/spearman"} <= set(on_disk["metrics"])
    assert on_disk["steps"] == 3


def test_kd_trial_on_mnli_reports_matched_and_mismatched(tmp_path, run_kdx):
    data = tmp_path / "MNLI"
    write_glue(data, "mnli", n_train=30, n_dev=9)
    results = run_kdx("method=kd", "task=glue/mnli", f"task.data_dir={data}", "model=tiny",
                      "trainer.max_steps=2", "model.teacher_epochs=1", tmp_path=tmp_path)
    assert results["status"] == "completed"
    assert {"val/acc", "val_mm/acc"} <= set(results["metrics"])
    assert results["main_metric"]["name"] == "val/acc"


def test_teacher_fine_tuned_on_more_rows_than_its_student(tmp_path, run_kdx):
    """teacher_training.max_train_examples=null: the store fine-tunes the teacher on every training
    row, under a key of its own, while the student keeps task.max_train_examples; the default (the
    task's own slice) leaves the trial key as it was before the setting existed."""
    from kdx.trial import result_config

    data = tmp_path / "SST-2"
    write_glue(data, "sst2", n_train=40, n_dev=8)
    common = ("method=kd", "task=glue/sst2", f"task.data_dir={data}", "model=tiny", "task.max_train_examples=10",
              "trainer.max_steps=2", "model.teacher_epochs=1")
    same = run_kdx(*common, tmp_path=tmp_path / "same", cache_dir=tmp_path / "cache")
    every = run_kdx(*common, "teacher_training.max_train_examples=null", tmp_path=tmp_path / "every",
                    cache_dir=tmp_path / "cache")
    rows = {Path(r["teacher_source"]).name: json.loads((Path(r["teacher_source"]) / "info.json").read_text())
            ["train_examples"] for r in (same, every)}
    assert sorted(rows.values()) == [10, 40] and len(rows) == 2
    assert same["trial_key"] != every["trial_key"]
    assert "max_train_examples" not in result_config(compose_trial(list(common)))["teacher_training"]
    assert result_config(compose_trial([*common, "teacher_training.max_train_examples=null"])
                         )["teacher_training"]["max_train_examples"] is None


def test_teacher_slice_on_a_task_without_one_is_refused(tmp_path, run_kdx):
    with pytest.raises(KdxError) as err:
        run_kdx("method=kd", "task=synthetic", "task.train_size=64", "teacher_training.max_train_examples=32",
                "trainer.max_steps=1", tmp_path=tmp_path)
    assert "has no max_train_examples slice" in str(err.value) and "task.train_size" in err.value.fix
