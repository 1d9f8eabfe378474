"""The long variants of the fault-injection suite (`make test-slow`): real `python -m kdx` processes,
killed with SIGKILL at random moments of a 2-phase trial (teacher store fine-tuning included), sent
SIGTERM, or launched twice at once; every relaunch must end with the uninterrupted run's metrics."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_faults import STEPS_PER_EPOCH, TWO_PHASES

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled",
       "TOKENIZERS_PARALLELISM": "false"}


def command(tmp_path: Path, cache: Path) -> list[str]:
    return [sys.executable, "-m", "kdx", f"hydra.run.dir={tmp_path / 'run'}", f"paths.cache_dir={cache}",
            f"paths.output_root={tmp_path / 'outputs'}", "trainer.enable_progress_bar=false", "lock.poll_s=0.5",
            *TWO_PHASES]


def launch(tmp_path: Path, cache: Path) -> subprocess.Popen:
    return subprocess.Popen(command(tmp_path, cache), cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def results(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "run" / "results.json").read_text())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("straight")
    start = time.time()
    process = launch(root, root / "cache")
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    return results(root), time.time() - start


def assert_same(got: dict, want: dict) -> None:
    assert got["status"] == "completed" and got["steps"] == want["steps"] == 3 * STEPS_PER_EPOCH
    for name, value in want["metrics"].items():
        assert got["metrics"][name] == pytest.approx(value, abs=1e-6), name


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_at_random_moments_then_relaunch(seed, uninterrupted, tmp_path):
    want, wall = uninterrupted
    rng = random.Random(seed)
    cache = tmp_path / "cache"   # empty: the first kills may land in the teacher store's fine-tuning
    for _ in range(3):
        process = launch(tmp_path, cache)
        time.sleep(rng.uniform(0.3, 1.0) * wall)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.communicate(timeout=600)
        if (tmp_path / "run" / "results.json").exists() and results(tmp_path)["status"] == "completed":
            break
    process = launch(tmp_path, cache)
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    assert_same(results(tmp_path), want)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
def test_signal_to_a_real_process_interrupts_and_the_relaunch_resumes(signum, uninterrupted, tmp_path):
    want, _ = uninterrupted
    process = launch(tmp_path, tmp_path / "cache")
    last = tmp_path / "run" / "checkpoints" / "phase1-anneal" / "last.ckpt"
    deadline = time.time() + 600
    while not last.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signum)
    output, _ = process.communicate(timeout=600)
    if process.returncode == 0:
        pytest.skip("the trial finished before the signal arrived")
    assert process.returncode == 128 + signum, output
    assert results(tmp_path)["status"] == "interrupted"
    again = launch(tmp_path, tmp_path / "cache")
    output, _ = again.communicate(timeout=600)
    assert again.returncode == 0, output
    assert "resuming from" in output
    assert_same(results(tmp_path), want)


def test_same_trial_launched_twice_at_once_trains_once(uninterrupted, tmp_path):
    want, _ = uninterrupted
    first, second = launch(tmp_path, tmp_path / "cache"), launch(tmp_path, tmp_path / "cache")
    outputs = [p.communicate(timeout=900)[0] for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outputs
    assert sum("already completed" in o for o in outputs) == 1
    assert sum("running elsewhere" in o for o in outputs) == 1
    for phase in (tmp_path / "run" / "checkpoints").iterdir():
        assert len(list(phase.glob("best-*.ckpt"))) == 1, phase   # no best-…-v1.ckpt from a second trainer
    assert_same(results(tmp_path), want)
