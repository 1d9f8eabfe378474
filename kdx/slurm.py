"""`hardware=slurm`: trials as SLURM jobs through submitit (pip install 'kdx[slurm]'); the launcher
itself is kdx.slurm_launcher (it needs the optional submitit plugin, this module does not).

What kdx adds to Hydra's submitit launcher:
- GPUs are requested only where there are some (`hardware.gpus_per_node=auto` asks `sinfo` whether
  the partition has GPU gres), so the same config submits to a CPU-only cluster.
- Each job's stdout/stderr files are printed when the jobs are submitted.
- On a cluster without accounting (`sacct` fails), job states come from `squeue` instead of a
  warning per poll; a job that left the queue without a result is reported, not waited for forever.

Preemption and time limits need nothing here: a requeued job runs the same trial in the same
(content-addressed) folder, and the training layer resumes it from its `last.ckpt`.
"""

import shutil
import subprocess
from functools import lru_cache

from omegaconf import OmegaConf

from kdx.errors import KdxError


# ---- GPUs only where the partition has them ------------------------------------------------------
def partition_has_gpus(partition: str | None) -> bool:
    """Whether any node of `partition` (default: every partition) declares GPU gres."""
    if shutil.which("sinfo") is None:
        return False
    command = ["sinfo", "-h", "-o", "%G"] + (["-p", partition] if partition else [])
    try:
        gres = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return False
    return "gpu" in gres


def gpus_per_node(setting, devices, partition):
    """`hardware.gpus_per_node`: auto (trainer.devices if the partition has GPUs, else none),
    null (none), or a number."""
    if setting is None or setting == "none":
        return None
    if setting == "auto":
        return int(devices) if partition_has_gpus(partition) else None
    try:
        return int(setting)
    except (TypeError, ValueError):
        raise KdxError(f"hardware.gpus_per_node={setting!r} is not a number",
                       "use auto, null (CPU-only) or a number of GPUs per node") from None


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("kdx_slurm_gpus"):
        OmegaConf.register_new_resolver("kdx_slurm_gpus", gpus_per_node)


# ---- job states without accounting ---------------------------------------------------------------
@lru_cache(maxsize=1)
def accounting_available() -> bool:
    try:
        return subprocess.run(["sacct", "-n", "-X", "-o", "JobID", "-j", "1"], capture_output=True,
                              timeout=30).returncode == 0
    except (subprocess.SubprocessError, OSError):
        return False


def squeue_watcher_class():
    from submitit.slurm.slurm import SlurmInfoWatcher

    class SqueueWatcher(SlurmInfoWatcher):
        """submitit's job-state watcher, reading `squeue` (every state it still lists) when `sacct`
        has no accounting storage (checked once, at the first poll). A registered job absent from
        the queue has ended."""

        def _make_command(self):
            command = super()._make_command()
            if command is None or accounting_available():
                return command
            job_ids = [command[i + 1] for i, part in enumerate(command) if part == "-j"]
            return ["squeue", "-h", "-t", "all", "-o", "%i|%T|%N", "-j", ",".join(job_ids)]

        def read_info(self, string):
            if accounting_available():
                return super().read_info(string)
            text = string.decode() if isinstance(string, bytes) else string
            info = super().read_info("JobID|State|NodeList\n" + text)
            for job_id in self._registered - self._finished:
                info.setdefault(job_id, {"JobID": job_id, "State": "LEFT_QUEUE"})
            return info

    return SqueueWatcher
