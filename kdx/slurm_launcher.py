"""What kdx adds to the submitit launchers of `hardware=slurm` (see kdx.slurm), installed when
`python -m kdx` starts and submitit is present: each job's stdout/stderr files are printed at
submission, and on a cluster without accounting job states are read from squeue.

(Hydra instantiates only launchers defined in its `hydra_plugins` package, and re-imports the
plugin modules when it scans them, so kdx extends submitit itself, which the plugin calls.)"""

from functools import wraps

from kdx.slurm import squeue_watcher_class


def printing_log_paths(map_array):
    @wraps(map_array)
    def submit_and_print(executor, fn, *iterables):
        jobs = map_array(executor, fn, *iterables)
        for job in jobs:
            print(f"[kdx] submitted job {job.job_id}\n      stdout {job.paths.stdout}\n"
                  f"      stderr {job.paths.stderr}", flush=True)
        return jobs

    submit_and_print.kdx_wrapped = True
    return submit_and_print


def install() -> None:
    """No-op without submitit, or when already installed."""
    try:
        import submitit
        from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob
    except ImportError:
        return
    if getattr(submitit.AutoExecutor.map_array, "kdx_wrapped", False):
        return
    submitit.AutoExecutor.map_array = printing_log_paths(submitit.AutoExecutor.map_array)
    if type(SlurmJob.watcher) is SlurmInfoWatcher:
        SlurmJob.watcher = squeue_watcher_class()(delay_s=SlurmJob.watcher._delay_s)
