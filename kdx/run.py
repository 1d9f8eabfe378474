"""One trial: key → skip-if-done → seed → data → teacher → student → method → fit (resume)
→ evaluate the best checkpoint → results.json.
"""

import json
import os
import logging
import warnings
import time
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from kdx.distill import DistillationModule
from kdx.errors import KdxError
from kdx.loggers import TrialLoggers
from kdx.methods.base import Method
from kdx.models.student import build, build_student, parameter_count
from kdx.models.tokenizer import build_tokenizer
from kdx.resume import EpochSeed
from kdx.results import RESULTS_FILE, is_completed, read_results, versions, write_json_atomic
from kdx.summary import print_summary
from kdx.teacher import Teacher, obtain_teacher, teacher_config
from kdx.training import (best_checkpoint_callback, evaluate, last_checkpoint_callback, make_trainer,
                          monitor_mode, validate_before_max_steps)
from kdx.trial import result_config, trial_key

PHASE_DONE = "phase_done.json"


def output_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def is_rank_zero() -> bool:
    """Only the first process of a DDP run writes results (Lightning's launcher sets these)."""
    return all(int(os.environ.get(name, 0)) == 0 for name in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def quiet_lightning() -> None:
    """Lightning's INFO lines (GPU available, tips, ...) drown the progress bar and the summary."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Lightning 2.6's own use of a torch API deprecated in torch 2.13: nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def main(cfg: DictConfig) -> dict:
    """Run (or skip) the trial described by `cfg`; returns its results."""
    quiet_lightning()
    out_dir = output_dir()
    key = trial_key(cfg)
    if cfg.skip_completed and is_completed(out_dir, key):
        print(f"[kdx] trial {key} already completed: {out_dir / RESULTS_FILE} (skipping; "
              f"skip_completed=false reruns it)")
        return read_results(out_dir)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    group = Path(HydraConfig.get().sweep.dir).name if HydraConfig.get().mode == RunMode.MULTIRUN else None
    loggers = TrialLoggers(cfg, out_dir, key, result_config(cfg), group)
    failed = True
    try:
        results = run_trial(cfg, out_dir, key, resolved, loggers)
        failed = False
        return results
    except KdxError as err:
        if is_rank_zero():
            write_json_atomic(out_dir / RESULTS_FILE, failure(cfg, key, resolved, err))
        raise
    finally:
        loggers.finish(failed)


def failure(cfg: DictConfig, key: str, resolved: dict, err: Exception) -> dict:
    return {"status": "failed", "error": str(err), "trial_key": key, "task": cfg.task.name,
            "method": cfg.method.name, "model": cfg.model.name, "seed": cfg.seed, "config": resolved,
            "versions": versions()}


def run_trial(cfg: DictConfig, out_dir: Path, key: str, resolved: dict, loggers: TrialLoggers) -> dict:
    start = time.time()
    if cfg.hardware.get("torch_threads"):
        torch.set_num_threads(int(cfg.hardware.torch_threads))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    task = instantiate(cfg.task, _recursive_=False)
    spec = task.spec
    method: Method = instantiate(cfg.method, _recursive_=False)
    if method.needs_teacher and method.teacher_spec == "teacher" and cfg.model.get("teacher") is None:
        raise KdxError(f"method={cfg.method.name} needs a teacher, but model={cfg.model.name} has none",
                       "choose a model pair with a teacher (e.g. model=tiny) or method=finetune")
    tokenizer = build_tokenizer(cfg.model.tokenizer, task, cfg.paths.cache_dir) if cfg.model.get("tokenizer") else None
    vocab_size = len(tokenizer) if tokenizer is not None else None
    datamodule = task.datamodule(tokenizer, cfg.data)

    def datamodule_with_batch(batch_size: int):
        if batch_size == cfg.data.batch_size:
            return datamodule  # already encoded: do not tokenize the task twice
        return task.datamodule(tokenizer, OmegaConf.merge(cfg.data, {"batch_size": batch_size}))

    teacher: Teacher | None = None
    if method.needs_teacher:
        teacher = obtain_teacher(teacher_config(cfg, method.teacher_spec), spec, vocab_size, datamodule_with_batch)
        teacher = method.teacher_for_student(teacher, cfg, spec, vocab_size, datamodule_with_batch)
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # same student init however the teacher came

    def teacher_for_truncation(which: str):
        if which == "finetuned":
            if teacher is None:
                raise KdxError("model.student.truncate_from=finetuned needs a method with a teacher",
                               "use truncate_from=pretrained")
            return teacher.model
        return build(cfg.model.teacher, spec.num_labels, vocab_size)

    student = build_student(cfg.model.student, spec.num_labels, vocab_size,
                            teacher_for_truncation if cfg.model.get("teacher") is not None else None)
    if teacher is not None:
        check_compatible(teacher.model, student, spec.num_labels)
    if hasattr(method, "prepare"):
        method.prepare(cfg=cfg, spec=spec, teacher=teacher, student=student, tokenizer=tokenizer)

    best_path, steps = fit_phases(cfg, out_dir, method, student, teacher, spec, datamodule, loggers)
    load_student_weights(student, best_path)
    metrics = evaluate(student, spec, datamodule, cfg.trainer)
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
        "steps": steps,
        "best_checkpoint": str(best_path),
        "teacher_source": teacher.source if teacher else None,
        "config": resolved,
        "versions": versions(),
    }
    if is_rank_zero():
        write_json_atomic(out_dir / RESULTS_FILE, results)
        loggers.log_summary({f"best/{k}": v for k, v in metrics.items()})
        print_summary(results, out_dir)
    return results


def check_compatible(teacher, student, num_labels: int) -> None:
    """Teacher and student must agree on the label space (and on the vocabulary for the methods
    that feed one token sequence to both)."""
    t_labels = getattr(getattr(teacher, "config", None), "num_labels", None)
    s_labels = getattr(getattr(student, "config", None), "num_labels", None)
    if t_labels is not None and s_labels is not None and t_labels != s_labels:
        raise KdxError(f"teacher has {t_labels} labels but student has {s_labels}",
                       f"both must have the task's {num_labels} labels: use checkpoints for this task "
                       "or base models without a classification head")


def load_student_weights(student, checkpoint: Path) -> None:
    """The student's weights from a DistillationModule checkpoint (which also holds the method's)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    student.load_state_dict({k[len("student."):]: v for k, v in state.items() if k.startswith("student.")})


def fit_phases(cfg, out_dir: Path, method: Method, student, teacher: Teacher | None, spec, datamodule,
               loggers: TrialLoggers) -> tuple[Path, int]:
    """Runs the method's phases in order, each resumable from its own last.ckpt; returns the best
    checkpoint over all phases and the total optimizer steps."""
    phases = method.phases()
    best_path, best_score, steps = None, None, 0
    sign = 1 if monitor_mode(spec) == "max" else -1
    for index, phase in enumerate(phases):
        ckpt_dir = out_dir / "checkpoints" if len(phases) == 1 else out_dir / "checkpoints" / f"phase{index + 1}-{phase.name}"
        done_file = ckpt_dir / PHASE_DONE
        if done_file.exists():
            done = json.loads(done_file.read_text())
        else:
            if index > 0 and phase.restart_from_best and best_path is not None:
                load_student_weights(student, best_path)
            module = DistillationModule(student, method, spec, cfg.optim, teacher.model if teacher else None, phase=index)
            checkpoint = best_checkpoint_callback(spec, ckpt_dir, cfg.checkpoint.every_n_epochs)
            callbacks = [checkpoint, EpochSeed(cfg.seed)]
            if cfg.checkpoint.save_last:
                callbacks.append(last_checkpoint_callback(ckpt_dir))
            overrides = {}
            if phase.max_epochs is not None:
                overrides["max_epochs"] = phase.max_epochs
            if phase.max_steps is not None:
                overrides["max_steps"] = phase.max_steps
            overrides.update(validate_before_max_steps(cfg.trainer, overrides, datamodule))
            if getattr(method, "manual_optimization", False):
                # Lightning rejects Trainer clipping with manual optimisation: the module clips.
                module.manual_clip_val = cfg.trainer.get("gradient_clip_val")
                overrides["gradient_clip_val"] = None
            trainer = make_trainer(cfg.trainer, callbacks=callbacks,
                                   logger=loggers.for_phase(None if len(phases) == 1 else f"phase{index + 1}-{phase.name}"),
                                   **overrides)
            last = ckpt_dir / "last.ckpt"
            if last.exists():
                print(f"[kdx] resuming from {last}")
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if last.exists() else None)
            if not checkpoint.best_model_path:
                raise KdxError("training ended before any evaluation, so there is no best checkpoint",
                               "train for at least one epoch, or set trainer.val_check_interval so that "
                               "validation runs within trainer.max_steps")
            done = {"best_path": checkpoint.best_model_path, "best_score": float(checkpoint.best_model_score),
                    "steps": int(trainer.global_step)}
            if is_rank_zero():
                write_json_atomic(done_file, done)
        steps += done["steps"]
        if best_score is None or sign * done["best_score"] >= sign * best_score:
            best_path, best_score = Path(done["best_path"]), done["best_score"]
    return best_path, steps
