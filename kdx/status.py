"""`python -m kdx.status DIR`: where a sweep stands, readable while it runs.

    python -m kdx.status multirun/label_regularization

Counts per method and task: completed, failed, running (folder written to recently, no result),
interrupted (no result and no activity for --stale-min minutes: a killed or preempted trial that a
relaunch resumes) and not started (in the sweep's grid, no folder). The grid comes from the sweep's
own config (every launch's command line, kdx/launches.py), so trials that never started show.
Then the failed trials with the first line of their error, and the time per trial.
"""

import argparse
import json
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from kdx.errors import KdxError
from kdx.launches import SWEEP_CONFIG, sweep_grids
from kdx.results import RESULTS_FILE

STATES = ("completed", "failed", "running", "interrupted", "not started")


@dataclass
class TrialState:
    key: str
    task: str
    method: str
    state: str
    seconds: float | None = None      # training time (completed) or time since the folder appeared
    error: str | None = None
    seed: int | None = None


def expected_trials(folder: Path):
    """The grid of every launch into the sweep folder (kdx.plan), or None when it cannot be known."""
    grids = sweep_grids(folder)
    if grids is None:
        return None
    from kdx.plan import plan  # composes configs: only when there is a grid to expand

    trials = {}
    for overrides in grids:
        trials.update({trial.key: trial for trial in plan(overrides)})
    return list(trials.values())


def last_activity(trial_dir: Path) -> float:
    """The newest modification time of anything in the trial's folder."""
    return max((p.stat().st_mtime for p in trial_dir.rglob("*")), default=trial_dir.stat().st_mtime)


def trial_folders(folder: Path, planned: dict) -> list[Path]:
    """The trial folders under a sweep folder: subfolders with a trial's results.json or .hydra, or
    named by a planned trial key; a folder that is neither is searched further down (a script that
    gives each trial its own `hydra.run.dir=<sweep>/<task>/<method>/seed<N>` nests them)."""
    found = []
    for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (child / RESULTS_FILE).exists() or (child / ".hydra").exists() or child.name in planned:
            found.append(child)
        else:
            found.extend(trial_folders(child, planned))
    return found


def trial_states(folder: Path, stale_min: float = 30.0, now: float | None = None) -> list[TrialState]:
    """One state per trial of the sweep in `folder`: its trial folders (`trial_folders`: named by their
    trial key in a multirun, or nested by a script), and the planned trials that have none yet."""
    folder = Path(folder)
    if not folder.is_dir():
        raise KdxError(f"no such folder: {folder}", "pass a sweep folder (hydra.sweep.dir)")
    now = time.time() if now is None else now
    planned = expected_trials(folder)
    names = {p.key: (p.task, p.method, p.seed) for p in planned} if planned is not None else {}
    states = []
    seen = set()
    for trial_dir in trial_folders(folder, names):
        results_file = trial_dir / RESULTS_FILE
        seen.add(trial_dir.name)
        label = trial_dir.relative_to(folder).as_posix()   # the key, or a nested trial's path
        task, method, seed = names.get(trial_dir.name, (None, None, None))
        if results_file.exists():
            try:
                results = json.loads(results_file.read_text())
            except json.JSONDecodeError:
                results = {"status": "failed", "error": f"unreadable {RESULTS_FILE}"}
            task, method, seed = results.get("task", task), results.get("method", method), results.get("seed", seed)
            if results.get("status") == "completed":
                states.append(TrialState(label, task, method, "completed", results.get("train_time_s"), seed=seed))
            else:
                error = (results.get("error") or "no error recorded").strip().splitlines()[0]
                states.append(TrialState(label, task, method, "failed", error=error, seed=seed))
            continue
        task, method = task or job_value(trial_dir, "task", "name"), method or job_value(trial_dir, "method", "name")
        seed = seed if seed is not None else job_value(trial_dir, "seed")
        active = now - last_activity(trial_dir) < stale_min * 60
        states.append(TrialState(label, task or "?", method or "?", "running" if active else "interrupted",
                                 now - trial_dir.stat().st_ctime, seed=seed))
    for key, (task, method, seed) in names.items():
        if key not in seen:
            states.append(TrialState(key, task, method, "not started", seed=seed))
    return states


def job_value(trial_dir: Path, *path: str):
    """A value of a trial's own config (.hydra/config.yaml), before it has results."""
    config_file = trial_dir / ".hydra" / "config.yaml"
    if not config_file.exists():
        return None
    node = OmegaConf.load(config_file)
    for part in path:
        node = node.get(part) if node is not None else None
    return node


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def report_lines(folder: Path, states: list[TrialState], grid_known: bool) -> list[str]:
    counts: dict[tuple, Counter] = defaultdict(Counter)
    times: dict[tuple, list[float]] = defaultdict(list)
    for s in states:
        counts[(s.method, s.task)][s.state] += 1
        if s.state == "completed" and s.seconds is not None:
            times[(s.method, s.task)].append(s.seconds)
    total = Counter(s.state for s in states)
    expected = f"{len(states)} trials in the grid" if grid_known else \
        f"{len(states)} trial folders (grid unknown: no {SWEEP_CONFIG}, so trials not started are not counted)"
    lines = [f"sweep {folder}: {expected}",
             "  " + " · ".join(f"{total[state]} {state}" for state in STATES), "",
             "| method | task | " + " | ".join(STATES) + " | time/trial |",
             "|" + "---|" * (len(STATES) + 3)]
    for (method, task) in sorted(counts, key=lambda k: tuple(map(str, k))):
        c = counts[(method, task)]
        mean = statistics.fmean(times[(method, task)]) if times[(method, task)] else None
        lines.append(f"| {method} | {task} | " + " | ".join(str(c[state]) for state in STATES) +
                     f" | {_duration(mean)} |")
    failed = [s for s in states if s.state == "failed"]
    if failed:
        lines += ["", f"failed ({len(failed)}):"]
        lines += [f"  {s.key}  {s.task} · {s.method} · seed {s.seed}: {s.error}" for s in failed]
    running = [s for s in states if s.state in ("running", "interrupted")]
    if running:
        lines += ["", "started, no result yet:"]
        lines += [f"  {s.key}  {s.task} · {s.method} · seed {s.seed}: {s.state}, folder {_duration(s.seconds)} old"
                  for s in running]
    done = [s.seconds for s in states if s.state == "completed" and s.seconds is not None]
    left = sum(1 for s in states if s.state != "completed")
    if done and left:
        lines += ["", f"mean {_duration(statistics.fmean(done))} per completed trial; {left} trial(s) to go "
                      f"≈ {_duration(left * statistics.fmean(done))} of trial time"]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdx.status", description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="the sweep folder (hydra.sweep.dir)")
    parser.add_argument("--stale-min", type=float, default=30.0,
                        help="a trial with no result and no file written for this long counts as interrupted")
    args = parser.parse_args(argv)
    try:
        grid_known = sweep_grids(args.dir) is not None
        states = trial_states(args.dir, args.stale_min)
    except KdxError as err:
        print(f"kdx.status: error: {err}", file=sys.stderr)
        return 2
    print("\n".join(report_lines(args.dir, states, grid_known)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
