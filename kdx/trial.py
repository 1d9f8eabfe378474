"""Trial identity: a short hash of the result-relevant part of the resolved config.

Two commands that resolve to the same experiment get the same key, hence the same output folder,
so a relaunched sweep skips what already completed. Keys that only say *where* or *how* a trial
runs (paths, logging, hardware, progress bars, the local data folder) are left out of the hash.
"""

from omegaconf import DictConfig, OmegaConf

from kdx.hashing import digest

# Top-level keys that never change a trial's result.
INFRA_KEYS = ("hydra", "paths", "logger", "hardware", "skip_completed", "lock")
# Trainer arguments that only change how a run looks, not what it computes.
INFRA_TRAINER_KEYS = (
    "enable_progress_bar", "enable_model_summary", "log_every_n_steps", "default_root_dir",
    "accelerator", "devices", "num_nodes", "strategy", "deterministic", "precision",
)
KEY_LENGTH = 12


def result_config(cfg: DictConfig) -> dict:
    """The resolved config without infrastructure keys, as plain data."""
    keep = [k for k in cfg.keys() if k not in INFRA_KEYS]
    data = OmegaConf.to_container(OmegaConf.masked_copy(cfg, keep), resolve=True)
    for key in INFRA_TRAINER_KEYS:
        data.get("trainer", {}).pop(key, None)
    data.get("task", {}).pop("data_dir", None)
    # Cached or live, the teacher's logits are the same (docs/architecture.md, teacher-output cache);
    # what is stored (cache_dtype, cache_topk) can change them and stays in the key.
    data.get("teacher", {}).pop("cache", None)
    data.get("teacher", {}).pop("cache_trajectory", None)   # on/off too, for Pro-KD's per-stage caches
    data.get("data", {}).pop("pin_memory", None)   # how batches reach the device (hardware=gpu)
    drop_default_teacher_slice(data)
    return data


def drop_default_teacher_slice(data: dict) -> None:
    """`teacher_training.max_train_examples` equal to the task's own slice (its default) says nothing
    the task does not, and stays out of keys (so the keys made before the setting existed still hold)."""
    training, task = data.get("teacher_training") or {}, data.get("task") or {}
    if "max_train_examples" in training and training["max_train_examples"] == task.get("max_train_examples"):
        del training["max_train_examples"]


def trial_key(cfg: DictConfig) -> str:
    return digest(result_config(cfg), KEY_LENGTH)


def _trial_key_resolver(*, _root_: DictConfig) -> str:
    return trial_key(_root_)


def register_resolvers() -> None:
    """`${kdx_trial_key:}` in hydra.run.dir / hydra.sweep.subdir names a trial's folder."""
    if not OmegaConf.has_resolver("kdx_trial_key"):
        OmegaConf.register_new_resolver("kdx_trial_key", _trial_key_resolver)
