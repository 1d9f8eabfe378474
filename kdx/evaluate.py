"""`python -m kdx.evaluate checkpoint=TRIAL suite=robustness [robustness.<key>=VALUE ...]`: evaluate
a finished trial's student again, with a suite beyond its task metrics.

`checkpoint` is a trial folder (the one holding results.json) or a checkpoint file inside it
(`.ckpt` of a DistillationModule); the folder's results.json gives the config to rebuild task,
tokenizer and student, and without a file the trial's best checkpoint is used. The suite's
results are added to that results.json (key `robustness`) and printed as JSON.

Suites: `robustness` (kdx/robustness/suite.py; settings from conf/robustness/standard.yaml,
overridden by `robustness.*` arguments, e.g. robustness.attack.examples=50
robustness.ood.files.imdb=/data/imdb_test.tsv).
"""

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from kdx.__main__ import config_dir
from kdx.components import instantiate_component
from kdx.errors import KdxError
from kdx.models.student import build, build_student
from kdx.models.tokenizer import build_tokenizer
from kdx.results import RESULTS_FILE, read_results, write_json_atomic
from kdx.robustness.suite import run_suite
from kdx.training import load_student_weights

SUITES = ("robustness",)


def trial_of(checkpoint: Path) -> tuple[Path, dict]:
    """The trial folder of `checkpoint` and its results (the folder, or the nearest one above a file)."""
    for folder in [checkpoint, *checkpoint.parents] if checkpoint.is_dir() else checkpoint.parents:
        results = read_results(folder)
        if results is not None:
            return folder, results
    raise KdxError(f"checkpoint={checkpoint}: no {RESULTS_FILE} in it or above it",
                   "pass a trial folder written by `python -m kdx` (or a checkpoint inside one)")


def rebuild_student(cfg, task, tokenizer):
    """The trial's student architecture (weights are loaded from the checkpoint afterwards)."""
    spec, vocab = task.spec, len(tokenizer) if tokenizer is not None else None

    def teacher_architecture(_which: str):
        return build(cfg.model.teacher, spec.num_labels, vocab, family=spec.family)

    factory = teacher_architecture if cfg.model.get("teacher") is not None else None
    return build_student(cfg.model.student, spec.num_labels, vocab, factory, spec.family)


def suite_settings(overrides) -> OmegaConf:
    defaults = OmegaConf.load(Path(config_dir()) / "robustness" / "standard.yaml")
    return OmegaConf.merge(defaults, overrides or {})


def evaluate_trial(checkpoint: str | Path, suite: str, settings=None) -> dict:
    if suite not in SUITES:
        raise KdxError(f"suite={suite!r} is not a suite", f"use suite={' or suite='.join(SUITES)}")
    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise KdxError(f"checkpoint={checkpoint} does not exist", "pass a trial folder or a .ckpt file inside one")
    folder, results = trial_of(checkpoint)
    if results.get("status") != "completed":
        raise KdxError(f"{folder / RESULTS_FILE} is not a completed trial", "evaluate a trial that finished")
    cfg = OmegaConf.create(results["config"])
    task = instantiate_component(cfg.task, "task")
    tokenizer = build_tokenizer(cfg.model.tokenizer, task, cfg.paths.cache_dir) if cfg.model.get("tokenizer") else None
    if tokenizer is None:
        raise KdxError("the robustness suite attacks text: this trial has no tokenizer", "use a text task")
    student = rebuild_student(cfg, task, tokenizer)
    weights = checkpoint if checkpoint.is_file() else Path(results["best_checkpoint"])
    if not weights.is_file():
        raise KdxError(f"the trial's checkpoint {weights} is gone", "pass an existing .ckpt with checkpoint=")
    load_student_weights(student, weights)
    robustness = run_suite(student, tokenizer, task, suite_settings(settings), cfg.data.max_length)
    results["robustness"] = robustness
    write_json_atomic(folder / RESULTS_FILE, results)
    return robustness


def main(argv: list[str] | None = None) -> int:
    args = OmegaConf.from_dotlist(list(sys.argv[1:] if argv is None else argv))
    try:
        if "checkpoint" not in args:
            raise KdxError("checkpoint= is missing", "python -m kdx.evaluate checkpoint=TRIAL_DIR suite=robustness")
        robustness = evaluate_trial(args.checkpoint, args.get("suite", "robustness"), args.get("robustness"))
    except KdxError as err:
        print(f"kdx.evaluate: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(robustness, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
