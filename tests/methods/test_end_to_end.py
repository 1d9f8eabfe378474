"""Every method YAML in conf/method/ runs a short trial end to end on the tiny default pair.

The list is the glob of conf/method/*.yaml, so a new method file is exercised without editing this
test. Per-method overrides (EXTRA_OVERRIDES) and expected logged terms (EXPECTED_TERMS) exist only
where a method needs them; checks that depend on what a method learns from (no teacher, a
self-teacher, an assistant) follow its declared `learns_from`.
"""

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from kdx.__main__ import config_dir
from kdx.components import instantiate_component
from tests.methods.reference import TINY_RUN, logged_columns

# Methods for causal language models only, run end to end by their own tests on a text sample
# (EchoAtt: tests/methods/test_echoatt.py), not on the tiny classification pair.
LANGUAGE_MODEL_ONLY = {"echoatt"}
METHODS = sorted(path.stem for path in (Path(config_dir()) / "method").glob("*.yaml")
                 if path.stem not in LANGUAGE_MODEL_ONLY)
ALTERNATE = ["method.generator_steps=1", "method.student_steps=2"]   # both step kinds in 3 batches
EXTRA_OVERRIDES = {
    "mate": ALTERNATE,
    "combined": ALTERNATE,
    "prokd": ["teacher_training.trajectory_every_n_steps=1"],       # a trajectory of several checkpoints
}
EXPECTED_TERMS = {
    "mate": {"loss", "ce", "div", "div_adv", "generator_div", "generator_loss"},
    "combined": {"loss", "annealed_mse", "annealed_mse_adv", "phi", "temperature", "ce", "generator_div"},
    # the schedules are logged every step, so a run shows what the method did
    "annealing": {"loss", "annealed_mse", "phi", "temperature", "ce"},
    "continuation": {"loss", "ce", "cnt", "phi", "psi"},
    "bpkd": {"loss", "ce", "kd", "kd_aux"},
    "prokd": {"loss", "ce", "kd", "stage"},
}


def test_every_method_yaml_is_listed():
    assert {"finetune", "kd", "annealing", "mate", "prokd"} <= set(METHODS)
    assert set(EXTRA_OVERRIDES) <= set(METHODS) and set(EXPECTED_TERMS) <= set(METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_method_runs_end_to_end(run_kdx, tmp_path, shared_cache, method):
    results = run_kdx(*TINY_RUN, f"method={method}", *EXTRA_OVERRIDES.get(method, []),
                      tmp_path=tmp_path, cache_dir=shared_cache)
    assert results["status"] == "completed" and results["method"] == method
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "completed"
    main = results["main_metric"]
    assert main["name"] == "val/acc" and 0.0 <= main["value"] <= 1.0

    columns = logged_columns(tmp_path / "run")
    train_terms = {c.removeprefix("train/") for c in columns if c.startswith("train/")}
    assert "loss" in train_terms, f"{method} logged no train/loss"
    assert train_terms - {"loss"}, f"{method} logged no train/<term> besides the loss"
    assert EXPECTED_TERMS.get(method, set()) <= train_terms

    learns_from = instantiate_component(OmegaConf.create(results["config"]["method"]), "method").learns_from
    params = results["params"]
    if learns_from == "none":
        assert params["teacher"] is None and results["teacher_source"] is None
    if learns_from == "self":       # a fine-tuned copy of the student's own architecture
        assert params["teacher"] == params["student"]
        info = json.loads((Path(results["teacher_source"]) / "info.json").read_text())
        assert info["teacher"]["hidden_size"] == results["config"]["model"]["student"]["hidden_size"]
    if learns_from == "assistant":  # the assistant, distilled into the store, bigger than the student
        assert "assistant" in results["teacher_source"]
        assert Path(results["teacher_source"]).is_relative_to(shared_cache)
        assert params["student"] < params["teacher"]
    if learns_from in ("teacher", "trajectory"):
        assert params["student"] < params["teacher"] and results["teacher_metrics"]
