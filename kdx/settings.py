"""Every setting of a trial checked before any work: `check_settings(cfg)`.

The task and the method declare their knobs in their constructors (kdx/components.py reads them);
the other groups, which have no constructor of their own, declare theirs in SETTINGS below. The
trainer's keys are Lightning's Trainer arguments (its signature gives the valid keys and types;
TRAINER_RANGES narrows the ones kdx relies on). A group marked OPEN_GROUPS may hold keys not
listed here (the model pair's builder arguments, a logger's options); the listed ones are checked.
"""

from typing import Literal

from omegaconf import DictConfig, OmegaConf

from kdx.components import check_component, declared_kinds
from kdx.errors import KdxError
from kdx.knobs import (Count, Fraction, Limit, NonNegative, NonNegativeInt, Positive, Seed, check_value,
                       unknown_key_fix)
from kdx.models.student import STUDENT_INITS

LockMode = Literal["wait", "exit"]

SETTINGS = {
    "seed": Seed,
    "skip_completed": bool,
    "model": {
        "name": str, "lr": Positive, "batch_size": Count, "teacher_lr": Positive, "teacher_epochs": Count,
        "gradient_clip_val": NonNegative | None,
        "student": {"init": Literal[STUDENT_INITS], "layer_stride": Count | None,
                    "truncate_from": Literal["pretrained", "finetuned"]},
        "teacher": {"finetuned": bool, "checkpoint": str | None},
    },
    "optim": {
        "name": Literal["adamw", "adam", "sgd"], "lr": Positive, "weight_decay": NonNegative, "momentum": Fraction,
        "schedule": Literal["linear", "cosine", "constant", "multistep"], "warmup_ratio": Fraction,
        "warmup_steps": NonNegativeInt | None, "decay_bias_and_norm": bool,
        "milestones": list[Fraction], "gamma": Positive,
    },
    "data": {"batch_size": Count, "eval_batch_size": Count, "max_length": Count | None,
             "num_workers": NonNegativeInt, "pin_memory": bool},
    # The teacher-output cache (kdx/cache.py).
    "teacher": {"cache": bool, "cache_dtype": Literal["float32", "float16"], "cache_topk": Count | None,
                "cache_trajectory": Literal["auto", "always", "never"]},
    "checkpoint": {"save_last": bool, "every_n_epochs": Count},
    "teacher_training": {"max_epochs": Count, "max_steps": Limit | None, "lr": Positive, "batch_size": Count,
                         "trajectory_every_n_steps": Count | None, "max_train_examples": Count | None},
    # One trial runs once (kdx/lock.py): what a second launch does while the first holds the trial.
    "lock": {"on_busy": LockMode, "poll_s": Positive, "heartbeat_s": Positive, "stale_after_s": Positive},
    "hardware": {"name": str, "torch_threads": Count | None},
    "logger": {"name": str},
    "paths": {"cache_dir": str, "output_root": str},
}
OPEN_GROUPS = ("model", "model.student", "model.teacher", "hardware", "logger", "paths")

# The Trainer arguments kdx's own logic reads, narrowed beyond Lightning's annotations.
TRAINER_RANGES = {
    "max_epochs": Limit | None, "max_steps": Limit, "min_epochs": NonNegativeInt | None,
    "gradient_clip_val": NonNegative | None, "accumulate_grad_batches": Count, "log_every_n_steps": Count,
    "num_sanity_val_steps": Limit, "check_val_every_n_epoch": Count | None,
}


def check_settings(cfg: DictConfig) -> None:
    """Raises a KdxError naming the first invalid setting: key, value, valid range and fix."""
    try:
        values = OmegaConf.to_container(cfg, resolve=True)
    except Exception as err:   # an interpolation that cannot resolve (`${model.lrr}`)
        raise KdxError(f"the config cannot be resolved: {err}".splitlines()[0],
                       "check the interpolations (${...}) in the overrides and the config files") from None
    check_table(values, SETTINGS, "")
    check_trainer(values.get("trainer") or {})
    for group in ("task", "method"):
        check_component(cfg[group], group)


def check_table(values: dict, table: dict, prefix: str) -> None:
    for key, kind in table.items():
        if key not in values:
            continue
        full = f"{prefix}{key}"
        if isinstance(kind, dict):
            if isinstance(values[key], dict):
                check_group(values[key], kind, full)
            continue
        check_value(full, values[key], kind)


def check_group(values: dict, table: dict, group: str) -> None:
    if group not in OPEN_GROUPS:
        unknown = [k for k in values if k not in table]
        if unknown:
            raise KdxError(f"{group}.{unknown[0]}: not a setting of {group}",
                           unknown_key_fix(f"{group}.{unknown[0]}", table))
    check_table(values, table, f"{group}.")


def check_trainer(values: dict) -> None:
    """trainer.* is passed to lightning.Trainer verbatim: its keys are the Trainer's arguments."""
    import lightning

    kinds = declared_kinds(lightning.Trainer)
    unknown = [k for k in values if k not in kinds]
    if unknown:
        raise KdxError(f"trainer.{unknown[0]}: not an argument of lightning.Trainer",
                       unknown_key_fix(f"trainer.{unknown[0]}", kinds))
    for key, value in values.items():
        kind, default = kinds[key]
        check_value(f"trainer.{key}", value, TRAINER_RANGES.get(key, kind), default)
