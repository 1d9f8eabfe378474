"""Settings are checked before any work: declared kinds and ranges (kdx/knobs.py), the table of the
groups without a constructor (kdx/settings.py), the closest valid key for a typo, exit code 2 and
no trial folder left `completed` (the first rows of the reliability table in issue 12)."""

import json
import sys
from pathlib import Path
from typing import Literal

import pytest

from kdx.errors import KdxError
from kdx.knobs import Count, Fraction, Positive, Range, Weight, closest, problem
from kdx.settings import check_settings
from tests.conftest import compose_trial, resolved_job, shipped_options

ROOT = Path(__file__).resolve().parents[1]


# ---- the kinds, against values worked out by hand ---------------------------------------------------
@pytest.mark.parametrize("value,kind,ok", [
    (2.0, Positive, True), (2, Positive, True), (0, Positive, False), (-1.0, Positive, False),
    (float("nan"), Positive, False), (float("inf"), Positive, False), (True, Positive, False), ("2", Positive, False),
    (0.0, Weight, True), (1.0, Weight, True), (1.5, Weight, False), (-0.1, Weight, False),
    (1, Count, True), (0, Count, False), (2.0, Count, False), (False, Count, False),
    (None, Count | None, True), (3, Count | None, True), ("l2", Literal["l2", "sign"], True),
    ("L2", Literal["l2", "sign"], False), (None, Literal[(None, "cosine")], True),
    ([0.5, 0.75], list[Fraction], True), ([0.5, 1.5], list[Fraction], False), (True, bool, True), (1, bool, False),
])
def test_kinds_accept_exactly_their_range(value, kind, ok):
    assert (problem(value, kind) is None) is ok


def test_range_words_name_the_bounds():
    assert problem(0, Positive) == "a number > 0"
    assert problem(3, Weight) == "a number in [0, 1]"
    assert problem("x", Count | None) == "an integer >= 1 or null"
    assert str(Range(0, 1, low_open=True, high_open=True)) == "in (0, 1)"


def test_closest_key_is_the_nearest_spelling():
    assert closest("alpah", ["alpha", "temperature", "tau_squared"]) == "alpha"
    assert closest("temprature", ["alpha", "temperature"]) == "temperature"
    assert closest("zzz", ["alpha", "temperature"]) is None


# ---- every shipped config passes, so the ranges refuse only what is wrong ----------------------------
@pytest.mark.parametrize("override", [f"{g}={o}" for g in ("task", "model", "method", "hardware", "logger")
                                      for o in shipped_options(g)] + [f"+experiment={e}" for e in shipped_options("experiment")])
def test_every_shipped_config_passes_the_checks(override):
    check_settings(resolved_job(compose_trial([override])))


# ---- the table's rows: a clear error naming key, value, range and fix -------------------------------
@pytest.mark.parametrize("override,says", [
    ("method.temperature=0", ["method.temperature=0", "> 0", "fix"]),
    ("method.alpha=1.5", ["method.alpha=1.5", "[0, 1]", "fix"]),
    ("seed=abc", ["seed='abc'", "an integer in [0, 4294967295]"]),
    ("data.batch_size=0", ["data.batch_size=0", "an integer >= 1"]),
    ("optim.name=rmsprop", ["optim.name='rmsprop'", "one of ['adamw', 'adam', 'sgd']"]),
    ("trainer.max_epochs=1.5", ["trainer.max_epochs=1.5", "an integer >= -1"]),
    ("+trainer.max_epoch=3", ["trainer.max_epoch", "did you mean trainer.max_epochs?"]),
    ("+optim.lrr=0.1", ["optim.lrr", "did you mean optim.lr?"]),
    ("+method.temprature=4", ["method.temprature", "did you mean method.temperature?"]),
    ("task.label_noise=2", ["task.label_noise=2", "[0, 1]"]),
    ("method=mate method.generator_steps=-1", ["method.generator_steps=-1", ">= 0"]),
])
def test_invalid_setting_is_refused_before_any_work(run_kdx, tmp_path, override, says):
    with pytest.raises(KdxError) as caught:
        run_kdx(*override.split(), tmp_path=tmp_path)
    for words in says:
        assert words in str(caught.value), (words, str(caught.value))
    # nothing ran: no checkpoint, no teacher store, and the folder records the refusal
    run_dir = tmp_path / "run"
    assert not (run_dir / "checkpoints").exists() and not (tmp_path / "cache" / "teachers").exists()
    assert json.loads((run_dir / "results.json").read_text())["status"] == "failed"


def test_command_line_typo_exits_2_with_the_closest_key(tmp_path):
    """A typo in an existing group's key fails in Hydra's composition; kdx names the closest key.
    A real `python -m kdx` process: in-process, the streams earlier in-process trials left to
    logging handlers make the result depend on test order."""
    import os
    import subprocess

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KDX_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "kdx", "method.alpah=0.3", f"paths.output_root={tmp_path}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    err = done.stderr
    assert done.returncode == 2, err
    assert "method.alpah: no such setting" in err and "did you mean method.alpha?" in err
    assert "Traceback" not in err
    assert not list(tmp_path.rglob("results.json"))   # refused before a trial folder was made
