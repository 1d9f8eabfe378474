"""A new method is one module and one YAML file: a reverse-KD method written into a temporary
folder (the class on sys.path, the YAML in a config dir added to Hydra's search path) runs end to
end without any change to the repository. And a misspelt method setting fails with its name."""

import json
import sys
import textwrap

import pytest

from kdx.errors import KdxError
from tests.methods.reference import TINY_RUN, logged_columns

MODULE = "kdx_test_reverse_kd"

METHOD_SOURCE = '''
"""Reverse KD: L = (1−α)·CE(y, σ(z_S)) + α·τ²·KL(σ(z_S/τ) ‖ σ(z_T/τ)) (the student's own
distribution first: mode-seeking instead of mean-seeking)."""

import torch.nn.functional as F

from kdx.losses import hard_label_loss
from kdx.methods.base import Method


class ReverseKD(Method):
    learns_from = "teacher"

    def __init__(self, name: str = "reverse_kd", alpha: float = 0.5, temperature: float = 2.0):
        super().__init__()
        self.name, self.alpha, self.temperature = name, alpha, temperature

    def losses(self, step):
        student, teacher = step.student_logits(), step.teacher_logits()
        ce = hard_label_loss(student, step.labels, step.regression)
        log_s = F.log_softmax(student / self.temperature, dim=-1)
        log_t = F.log_softmax(teacher / self.temperature, dim=-1)
        reverse = (log_s.exp() * (log_s - log_t)).sum(-1).mean() * self.temperature ** 2
        return {"loss": (1 - self.alpha) * ce + self.alpha * reverse, "ce": ce, "reverse_kl": reverse}
'''

METHOD_YAML = f"""
# Reverse KD (a test's own method): KL(student ‖ teacher) instead of KL(teacher ‖ student).
_target_: {MODULE}.ReverseKD
name: reverse_kd
alpha: 0.5
temperature: 2.0
"""


@pytest.fixture
def reverse_kd(tmp_path, monkeypatch):
    """The method's module on sys.path and its YAML in a config dir; returns the searchpath override."""
    code = tmp_path / "code"
    code.mkdir()
    (code / f"{MODULE}.py").write_text(textwrap.dedent(METHOD_SOURCE))
    conf = tmp_path / "conf"
    (conf / "method").mkdir(parents=True)
    (conf / "method" / "reverse_kd.yaml").write_text(METHOD_YAML)
    monkeypatch.syspath_prepend(str(code))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    yield f"hydra.searchpath=[file://{conf}]"
    sys.modules.pop(MODULE, None)


def test_a_new_method_runs_end_to_end_from_a_temporary_module_and_yaml(run_kdx, tmp_path, shared_cache,
                                                                        reverse_kd):
    results = run_kdx(*TINY_RUN, "method=reverse_kd", reverse_kd, tmp_path=tmp_path / "trial",
                      cache_dir=shared_cache)
    assert results["status"] == "completed" and results["method"] == "reverse_kd"
    assert results["config"]["method"]["_target_"] == f"{MODULE}.ReverseKD"
    written = json.loads((tmp_path / "trial" / "run" / "results.json").read_text())
    assert written["status"] == "completed"
    assert 0.0 <= results["main_metric"]["value"] <= 1.0
    assert results["teacher_source"] is not None        # the store provided the teacher it declared
    assert {"train/loss", "train/ce", "train/reverse_kl"} <= logged_columns(tmp_path / "trial" / "run")


def test_its_settings_are_checked_like_a_builtin_method(run_kdx, tmp_path, shared_cache, reverse_kd):
    with pytest.raises(KdxError, match=r"method\.alhpa"):
        run_kdx(*TINY_RUN, "method=reverse_kd", reverse_kd, "+method.alhpa=0.3", tmp_path=tmp_path,
                cache_dir=shared_cache)


def test_an_unknown_method_key_fails_naming_it(run_kdx, tmp_path, shared_cache):
    with pytest.raises(KdxError, match=r"method\.temprature") as err:
        run_kdx(*TINY_RUN, "method=kd", "+method.temprature=3", tmp_path=tmp_path, cache_dir=shared_cache)
    assert "temperature" in str(err.value)            # the message lists the real settings
    failed = json.loads((tmp_path / "run" / "results.json").read_text())
    assert failed["status"] == "failed" and "method.temprature" in failed["error"]
