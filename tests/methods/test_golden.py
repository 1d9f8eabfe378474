"""Golden values: the first `train/*` values of every method on the tiny default pair, pinned.

The numbers in golden_losses.json were recorded from kdx's own runs; a change that moves any
method's losses (a refactor that should be behaviour-neutral, a new default) fails here loudly.
When a change is *meant* to move them (or a method is added), re-record the variants concerned
and say why in the commit (recording merges into the file; -k picks variants):

    KDX_RECORD_GOLDEN=1 python -m pytest tests/methods/test_golden.py -k feature_kd
"""

import csv
import json
import math
import os
from pathlib import Path

import pytest

GOLDEN_FILE = Path(__file__).with_name("golden_losses.json")
RECORD = os.environ.get("KDX_RECORD_GOLDEN") == "1"
# The tiny default, small enough for seconds per method: 96 examples = 3 batches an epoch.
COMMON = ["task=synthetic", "task.train_size=96", "task.val_size=32", "teacher_training.max_epochs=1",
          "trainer.max_epochs=2", "trainer.log_every_n_steps=1", "seed=0"]
# One run per method; a few methods get a second variant for their other mode.
VARIANTS = {
    "finetune": [], "kd": [], "label_smoothing": [], "tf_reg": [], "self_kd": [], "takd": [],
    "feature_kd": [], "token_kd": [], "seq_kd": [],
    "token_kd-jsd": ["method=token_kd", "method.divergence=jsd"],
    "annealing": [], "continuation": [], "bpkd": [],
    "mate": ["method.generator_steps=1", "method.student_steps=2"],
    "combined": ["method.generator_steps=1", "method.student_steps=2"],
    "prokd": ["teacher_training.trajectory_every_n_steps=1"],
    "prokd-online": ["method=prokd", "method.teacher_mode=online", "method.final_ce_epochs=1"],
}
STEPS_KEPT = 6
REL_TOL, ABS_TOL = 1e-4, 1e-6


def logged_train_terms(run_dir: Path) -> dict[str, list[float]]:
    """Every `train/<term>` column of the trial's CSV logs, phase after phase, in step order."""
    terms: dict[str, list[float]] = {}
    for log in sorted((run_dir / "csv").rglob("metrics.csv")):
        with open(log) as f:
            for row in csv.DictReader(f):
                for name, value in row.items():
                    if name.startswith("train/") and value not in ("", None):
                        terms.setdefault(name, []).append(float(value))
    return {name: values[:STEPS_KEPT] for name, values in sorted(terms.items())}


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def golden():
    if RECORD:
        recorded = json.loads(GOLDEN_FILE.read_text())["runs"] if GOLDEN_FILE.exists() else {}
        yield recorded
        GOLDEN_FILE.write_text(json.dumps({"overrides": COMMON, "runs": dict(sorted(recorded.items()))},
                                          indent=1) + "\n")
        return
    if not GOLDEN_FILE.exists():
        pytest.fail(f"{GOLDEN_FILE} is missing: record it with KDX_RECORD_GOLDEN=1")
    yield json.loads(GOLDEN_FILE.read_text())["runs"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_first_losses_match_the_pinned_values(run_kdx, tmp_path, shared_cache, golden, variant):
    extra = VARIANTS[variant]
    method = variant if not any(o.startswith("method=") for o in extra) else None
    overrides = [*COMMON, *([f"method={method}"] if method else []), *extra]
    results = run_kdx(*overrides, tmp_path=tmp_path, cache_dir=shared_cache)
    assert results["status"] == "completed"
    terms = logged_train_terms(tmp_path / "run")
    assert terms.get("train/loss"), f"{variant} logged no train/loss"
    if RECORD:
        golden[variant] = terms
        return
    expected = golden[variant]
    assert sorted(terms) == sorted(expected), f"{variant}: logged terms changed"
    for name, values in expected.items():
        got = terms[name]
        assert len(got) == len(values), f"{variant} {name}: {len(got)} values, pinned {len(values)}"
        for i, (a, b) in enumerate(zip(got, values)):
            assert math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL), \
                f"{variant} {name} step {i}: {a} != pinned {b}"


def test_every_shipped_method_has_pinned_values(golden):
    from tests.methods.test_end_to_end import LANGUAGE_MODEL_ONLY   # pinned by their own tests

    shipped = {p.stem for p in (Path(__file__).parents[2] / "conf" / "method").glob("*.yaml")} - LANGUAGE_MODEL_ONLY
    pinned = {variant.split("-")[0] for variant in golden}
    assert shipped <= pinned, f"no golden values for {sorted(shipped - pinned)}: record them (see the docstring)"
