"""`python -m kdx.zeroshot model=<causal LM pair> task=<text source> [zeroshot.*=...]`: a student
before and after distillation, next to its teacher, without training anything.

For the teacher (as built), the student as built (for EchoAtt: the teacher with shared attention,
before any KD) and the student loaded from each of `zeroshot.checkpoints` (trial checkpoints,
e.g. the best of stage 1 and of stage 2): perplexity on the task's held-out split, the built-in
multiple-choice suites (`zeroshot.suites`, log-likelihood of each choice; SST-2 and CoLA dev from
`zeroshot.data_dir`, or JSONL files of items) and, with the optional extra installed
(`pip install kdx[lmeval]`), lm-evaluation-harness tasks by name (`zeroshot.harness_tasks`,
e.g. [hellaswag, winogrande]; they read their datasets from the hub).
"""

import copy
import sys
from pathlib import Path

import torch

from kdx.analyze import compose_config, settings
from kdx.components import instantiate_component
from kdx.errors import KdxError
from kdx.models.multiple_choice import evaluate_items, suite_items
from kdx.models.student import build, build_student, parameter_count
from kdx.models.tokenizer import build_tokenizer
from kdx.results import write_json_atomic
from kdx.training import evaluate, load_student_weights

DEFAULTS = {"checkpoints": [], "suites": ["sst2", "cola"], "data_dir": None, "limit": 200, "teacher": True,
            "harness_tasks": [], "harness_limit": None, "harness_include": None, "output": "outputs/zeroshot.json"}


def harness_scores(model, tokenizer, tasks: list[str], limit: int | None, include: str | None = None) -> dict:
    """lm-evaluation-harness on an in-memory model (the optional `kdx[lmeval]` extra); `include`:
    a folder of the harness's own task YAMLs (e.g. local files for offline tasks)."""
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise KdxError("zeroshot.harness_tasks needs lm-evaluation-harness, which is not installed",
                       "pip install 'kdx[lmeval]' (or leave zeroshot.harness_tasks empty)") from None
    wrapped = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=1)
    manager = TaskManager(include_path=str(include)) if include else None
    results = simple_evaluate(model=wrapped, tasks=list(tasks), limit=limit, log_samples=False,
                              task_manager=manager)["results"]
    return {task: {k: v for k, v in metrics.items() if isinstance(v, (int, float))} for task, metrics in results.items()}


def scores(model, tokenizer, spec, datamodule, cfg, opts) -> dict:
    model.eval()
    result = {"params": parameter_count(model)}
    result.update(evaluate(model, spec, datamodule, cfg.trainer))
    for suite in opts.suites:
        result[f"mc/{Path(str(suite)).stem}"] = evaluate_items(model, tokenizer,
                                                                 suite_items(str(suite), opts.data_dir, opts.limit))
    if opts.harness_tasks:
        result["lm_eval"] = harness_scores(model, tokenizer, list(opts.harness_tasks), opts.harness_limit,
                                           opts.harness_include)
    return result


def compare(cfg, opts) -> dict:
    if cfg.hardware.get("torch_threads"):
        torch.set_num_threads(int(cfg.hardware.torch_threads))
    task = instantiate_component(cfg.task, "task")
    spec = task.spec
    if spec.family != "language_modeling":
        raise KdxError(f"task={cfg.task.name} is not a language-modelling task", "use task=lm/text, lm/sst2, ...")
    tokenizer = build_tokenizer(cfg.model.tokenizer, task, cfg.paths.cache_dir)
    datamodule = task.datamodule(tokenizer, cfg.data)
    teacher = build(cfg.model.teacher, spec.num_labels, len(tokenizer), family=spec.family)
    student = build_student(cfg.model.student, spec.num_labels, len(tokenizer),
                            lambda which: copy.deepcopy(teacher), spec.family)
    report = {"model": cfg.model.name, "task": cfg.task.name}
    if opts.teacher:
        report["teacher"] = scores(teacher, tokenizer, spec, datamodule, cfg, opts)
    report["student"] = scores(student, tokenizer, spec, datamodule, cfg, opts)
    for checkpoint in opts.checkpoints:
        path = Path(str(checkpoint))
        if not path.is_file():
            raise KdxError(f"zeroshot.checkpoints: {path} is not a file", "give the .ckpt files of a trial")
        load_student_weights(student, path)
        report[f"student@{path.parent.name}/{path.name}"] = scores(student, tokenizer, spec, datamodule, cfg, opts)
    return report


def main(argv: list[str] | None = None) -> int:
    overrides = list(sys.argv[1:] if argv is None else argv)
    try:
        opts = settings([o for o in overrides if o.startswith("zeroshot.")], DEFAULTS, "zeroshot")
        cfg = compose_config([o for o in overrides if not o.startswith("zeroshot.")])
        report = compare(cfg, opts)
    except KdxError as err:
        print(f"kdx: error: {err}", file=sys.stderr)
        return 2
    write_json_atomic(Path(opts.output), report)
    for name, row in report.items():
        if isinstance(row, dict):
            mc = ", ".join(f"{k} {v['acc']:.3f}" for k, v in row.items() if k.startswith("mc/"))
            print(f"[kdx] {name}: perplexity {row.get('val/perplexity', float('nan')):.2f}  {mc}")
    print(f"[kdx] zero-shot comparison -> {opts.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
