"""How long a trial took to reach its first training step (results.json `timing`): from the start
of the process (imports included) and from the start of the trial itself (what a later trial of a
sweep that Hydra runs in the same process waits). `make bench` compares a sweep's repeat trial
with its first."""

import os
import time

_first_step_at: float | None = None
_trial_started_at: float | None = None


def process_start() -> float:
    """Wall-clock time this process started (Linux: from /proc, so interpreter start and imports
    count); elsewhere, when kdx was first imported."""
    try:
        ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in open("/proc/stat") if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _imported_at


_imported_at = time.time()


def mark_trial_start() -> None:
    global _first_step_at, _trial_started_at
    _trial_started_at, _first_step_at = time.time(), None


def mark_first_step() -> None:
    """Called at every training batch start; only the first of the trial counts."""
    global _first_step_at
    if _first_step_at is None:
        _first_step_at = time.time()


def first_step_seconds() -> dict:
    """Seconds to the trial's first training step, from process start and from trial start."""
    if _first_step_at is None:
        return {"process_start_to_first_step_s": None, "trial_start_to_first_step_s": None}
    return {"process_start_to_first_step_s": round(_first_step_at - process_start(), 2),
            "trial_start_to_first_step_s": round(_first_step_at - (_trial_started_at or process_start()), 2)}
