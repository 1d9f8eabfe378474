"""One trial: key → settings checked → skip-if-done → lock → seed → task → method → what it learns
from (teacher store) → student → method setup → fit the phases (resumable) → evaluate the best
checkpoint → results.json.
"""

import logging
import os
import signal
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from kdx import timing
from kdx.cache import open_teacher_outputs
from kdx.components import instantiate_component
from kdx.distributed import close_process_group, ddp_job, install_rank_command
from kdx.errors import KdxError
from kdx.interrupt import TrialInterrupted, requested, signals_stop_the_trial
from kdx.lock import trial_lock
from kdx.hardware import compile_models
from kdx.loggers import TrialLoggers
from kdx.methods.base import Method, SetupContext
from kdx.models.student import build, build_student, parameter_count
from kdx.models.outputs import enable_outputs
from kdx.models.tokenizer import build_tokenizer
from kdx.models.weights import check_label_spaces
from kdx.results import RESULTS_FILE, is_completed, read_results, versions, write_json_atomic
from kdx.robustness.suite import run_suite
from kdx.settings import check_settings
from kdx.store import Provided, provide
from kdx.summary import print_summary
from kdx.training import budget, evaluate, fit_phases, is_rank_zero, load_student_weights
from kdx.trial import result_config, trial_key


def output_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def quiet_lightning() -> None:
    """Lightning's INFO lines (GPU available, tips, ...) drown the progress bar and the summary."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # ... but a profiler the user asked for (`+trainer.profiler=simple|advanced|pytorch`) reports
    logging.getLogger("lightning.pytorch.profilers").setLevel(logging.INFO)
    # Lightning 2.6's own use of a torch API deprecated in torch 2.13: nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # On a SLURM login node a local trial is intended: Lightning's advice to prepend `srun` is noise
    # (hardware=slurm submits through submitit, which does use srun).
    warnings.filterwarnings("ignore", message=r".*`srun` command is available on your system.*")
    # Under DDP the task metrics are gathered by torchmetrics itself (kdx.distill), exactly.
    warnings.filterwarnings("ignore", message=r".*when logging on epoch level in distributed setting.*")


def main(cfg: DictConfig) -> dict:
    """Run (or skip) the trial described by `cfg`; returns its results."""
    timing.mark_trial_start()
    quiet_lightning()
    install_rank_command()
    with ddp_job():
        return run_or_skip(cfg)


def run_or_skip(cfg: DictConfig) -> dict:
    out_dir = output_dir()
    key = trial_key(cfg)
    try:
        check_settings(cfg)   # before any work: a bad setting never trains
    except KdxError as err:
        record(out_dir, failure(cfg, key, None, err))
        raise
    if cfg.skip_completed and is_completed(out_dir, key):
        return skipped(out_dir, key)
    with hold_trial(out_dir, cfg), signals_stop_the_trial():
        if cfg.skip_completed and is_completed(out_dir, key):   # finished by the launch we waited for
            return skipped(out_dir, key)
        return run_held_trial(cfg, out_dir, key)


def skipped(out_dir: Path, key: str) -> dict:
    print(f"[kdx] trial {key} already completed: {out_dir / RESULTS_FILE} (skipping; "
          f"skip_completed=false reruns it)")
    return read_results(out_dir)


@contextmanager
def hold_trial(out_dir: Path, cfg: DictConfig):
    """The trial's lock (kdx/lock.py), taken by the first process only: the other DDP ranks are
    launched by it and share its folder."""
    if not is_rank_zero() or int(os.environ.get("SLURM_PROCID", 0)) != 0:
        yield
        return
    with trial_lock(out_dir, cfg.get("lock")):
        yield


def record(out_dir: Path, results: dict) -> None:
    if is_rank_zero():
        write_json_atomic(out_dir / RESULTS_FILE, results)


def run_held_trial(cfg: DictConfig, out_dir: Path, key: str) -> dict:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    group = Path(HydraConfig.get().sweep.dir).name if HydraConfig.get().mode == RunMode.MULTIRUN else None
    loggers = TrialLoggers(cfg, out_dir, key, result_config(cfg), group)
    failed = True
    try:
        results = run_trial(cfg, out_dir, key, resolved, loggers)
        failed = False
        return results
    except KdxError as err:
        record(out_dir, failure(cfg, key, resolved, err))
        raise
    except (TrialInterrupted, SIGTERMException) as err:
        signum = err.signum if isinstance(err, TrialInterrupted) else (requested() or signal.SIGTERM)
        record(out_dir, {**failure(cfg, key, resolved, err), "status": "interrupted",
                         "error": f"interrupted by {signal.Signals(signum).name}; launch the same command to resume"})
        raise TrialInterrupted(signum) from None
    finally:
        loggers.finish(failed)


def plain_config(cfg: DictConfig) -> dict:
    """The config as data, resolved where it resolves (a refused config may not)."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:
        return OmegaConf.to_container(cfg, resolve=False)


def failure(cfg: DictConfig, key: str, resolved: dict | None, err: Exception) -> dict:
    return {"status": "failed", "error": str(err), "trial_key": key, "task": cfg.task.get("name"),
            "method": cfg.method.get("name"), "model": cfg.model.get("name"), "seed": cfg.get("seed"),
            "config": resolved if resolved is not None else plain_config(cfg),
            "versions": versions()}


def run_trial(cfg: DictConfig, out_dir: Path, key: str, resolved: dict, loggers: TrialLoggers) -> dict:
    start = time.time()
    if cfg.hardware.get("torch_threads"):
        torch.set_num_threads(int(cfg.hardware.torch_threads))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    task = instantiate_component(cfg.task, "task")
    spec = task.spec
    method: Method = instantiate_component(cfg.method, "method")
    if spec.family == "span_prediction" and not method.handles_span_targets:
        raise KdxError(f"method={cfg.method.name} does not apply to task {spec.name}: its losses read class "
                       "labels or sequence-level logits, not span start/end targets",
                       "use method=finetune, kd, self_kd, takd or feature_kd")
    tokenizer = build_tokenizer(cfg.model.tokenizer, task, cfg.paths.cache_dir) if cfg.model.get("tokenizer") else None
    vocab_size = len(tokenizer) if tokenizer is not None else None
    datamodule = task.datamodule(tokenizer, cfg.data)

    def datamodule_with_batch(batch_size: int, task_overrides: dict | None = None):
        """The task's data in batches of batch_size; task_overrides (the teacher's own slice of the
        training rows) build it from a task config changed by them."""
        if task_overrides:
            changed = instantiate_component(OmegaConf.merge(cfg.task, task_overrides), "task")
            return changed.datamodule(tokenizer, OmegaConf.merge(cfg.data, {"batch_size": batch_size}))
        if batch_size == cfg.data.batch_size:
            return datamodule  # already encoded: do not tokenize the task twice
        return task.datamodule(tokenizer, OmegaConf.merge(cfg.data, {"batch_size": batch_size}))

    provided = provide(method, cfg, spec, vocab_size, datamodule_with_batch)
    teacher = provided.teacher
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # same student init however the teacher came
    student = build_trial_student(cfg, spec, vocab_size, provided)
    # Checked here, before setup (which may read the models' configs), with a clear message for a
    # model that cannot give the outputs the method reads; the LightningModule repeats it (idempotent)
    # for modules built elsewhere (the store, tests).
    if teacher is not None:
        check_label_spaces(teacher.model, student, spec.num_labels)
        enable_outputs(teacher.model, method.outputs, "teacher")
    enable_outputs(student, method.outputs, "student")
    method.setup(SetupContext(
        spec=spec, student=student, tokenizer=tokenizer, teacher=teacher.model if teacher else None,
        teacher_source=teacher.source if teacher else None, trajectory=list(teacher.trajectory) if teacher else [],
        new_teacher=provided.new_teacher, budget=budget(cfg.trainer),
        gradient_clip_val=cfg.trainer.get("gradient_clip_val"), cache_dir=Path(cfg.paths.cache_dir)))

    compile_models(cfg.hardware, student, teacher.model if teacher else None)
    teacher_outputs = open_teacher_outputs(cfg, method, spec, teacher.model, datamodule) if teacher else None
    best_path, steps = fit_phases(cfg, out_dir, method, student, teacher.model if teacher else None, spec,
                                  datamodule, loggers, teacher_outputs)
    close_process_group()  # what follows runs on one process, over every evaluation sample
    if not is_rank_zero():
        return {"status": "completed", "trial_key": key, "note": "rank > 0: rank 0 evaluates and writes"}
    load_student_weights(student, best_path)
    metrics = evaluate(student, spec, datamodule, cfg.trainer, artifacts_dir=out_dir if is_rank_zero() else None)
    teacher_metrics = None
    if teacher is not None:
        teacher_metrics = teacher.metrics or evaluate(teacher.model, spec, datamodule, cfg.trainer)
    results = {
        "status": "completed",
        "trial_key": key,
        "task": cfg.task.name, "method": cfg.method.name, "model": cfg.model.name, "seed": cfg.seed,
        "main_metric": {"name": spec.main_metric_name, "value": metrics.get(spec.main_metric_name)},
        "metrics": metrics,
        "teacher_metrics": teacher_metrics,
        "params": {"student": parameter_count(student),
                   "teacher": parameter_count(teacher.model) if teacher else None},
        "train_time_s": round(time.time() - start, 2),
        "timing": timing.first_step_seconds(),
        "steps": steps,
        "best_checkpoint": str(best_path),
        "teacher_source": teacher.source if teacher else None,
        "config": resolved,
        "versions": versions(),
    }
    if cfg.get("robustness") and is_rank_zero():   # +robustness=standard: the suite after training
        results["robustness"] = run_suite(student, tokenizer, task, cfg.robustness, cfg.data.max_length)
    if is_rank_zero():
        write_json_atomic(out_dir / RESULTS_FILE, results)
        loggers.log_summary({f"best/{k}": v for k, v in metrics.items()})
        print_summary(results, out_dir)
    return results


def build_trial_student(cfg: DictConfig, spec, vocab_size: int | None, provided: Provided):
    """The student per `model.student`; truncation reads the pre-trained or the fine-tuned teacher."""

    def teacher_for_truncation(which: str):
        if which == "finetuned":
            if provided.teacher is None:
                raise KdxError("model.student.truncate_from=finetuned needs a method with a teacher",
                               "use truncate_from=pretrained")
            return provided.teacher.model
        return build(cfg.model.teacher, spec.num_labels, vocab_size, family=spec.family)

    return build_student(cfg.model.student, spec.num_labels, vocab_size,
                         teacher_for_truncation if cfg.model.get("teacher") is not None else None, spec.family)
