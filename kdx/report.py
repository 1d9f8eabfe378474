"""`python -m kdx.report DIR`: one table over every results.json under DIR.

Rows are (task, model, method[, student init][, --by keys]); each shows the main metric's mean ± std
over seeds and, against the baseline method of the same task/model/init, the mean paired difference,
its effect size (Cohen's d_z: the mean paired difference over the differences' standard deviation)
and the p-value of a test paired over seeds (trials with the same seed). `--metric` picks another
metric, robustness ones included (`robustness/attack/attacked_acc`, `robustness/ood/hans/acc`).

A `paper` column shows the paper's reported number where the trial's experiment config records it:

    paper:
      source: Jafari et al. 2021, Table 1     # where the numbers come from
      metric: val/acc                         # the kdx metric they compare with
      values: {annealing: {glue/sst2: 0.935}} # method -> task -> number, on kdx's scale

    python -m kdx.report multirun/label_regularization --baseline finetune --test wilcoxon
    python -m kdx.report multirun/label_regularization --out report/   # + report.md, .csv, PNG plots

Failed trials are listed with their error's first line, and, for a sweep folder (its recorded
launches give the grid, kdx/launches.py), so are the trials that have no result yet: nothing is
dropped silently.
"""

import argparse
import csv
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from scipy import stats

from kdx.errors import KdxError
from kdx.results import RESULTS_FILE
from kdx.robustness import flatten

TESTS = ("ttest", "wilcoxon")


@dataclass
class Row:
    key: tuple                         # (task, model, method, *extra)
    metric: str
    by_seed: dict[int, float] = field(default_factory=dict)
    teacher: list[float] = field(default_factory=list)
    paper: float | None = None         # the paper's reported number (experiment config `paper`)
    diff: float | None = None          # mean over shared seeds of (this - baseline)
    p_value: float | None = None
    effect: float | None = None        # Cohen's d_z of the paired differences
    pairs: int = 0

    @property
    def values(self) -> list[float]:
        return [self.by_seed[s] for s in sorted(self.by_seed)]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        """Sample standard deviation (n-1); 0 for a single seed."""
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0


def config_value(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def load_results(root: Path) -> tuple[list[dict], list[Path]]:
    """Completed results under `root`, and the files of failed or unreadable trials."""
    root = Path(root)
    if not root.exists():
        raise KdxError(f"no such folder: {root}", "pass the sweep folder (hydra.sweep.dir) or an outputs folder")
    completed, failed = [], []
    for path in sorted(root.rglob(RESULTS_FILE)):
        try:
            results = json.loads(path.read_text())
        except json.JSONDecodeError:
            results = {}
        if results.get("status") == "completed":
            completed.append(results)
        else:
            failed.append(path)
    return completed, failed


def group_keys(results: list[dict], by: list[str]) -> list[str]:
    """Config keys beyond task/model/method that name a row: the student init where it varies, and `by`."""
    keys = []
    inits = {config_value(r.get("config", {}), "model.student.init") for r in results}
    if len(inits) > 1:
        keys.append("model.student.init")
    return keys + [k for k in by if k not in keys]


def summarize(results: list[dict], baseline: str = "finetune", test: str = "ttest",
              by: list[str] | None = None, metric: str | None = None) -> tuple[list[str], list[Row]]:
    """Rows of the table (sorted), and the names of the extra key columns."""
    if test not in TESTS:
        raise KdxError(f"unknown test {test!r}", f"choose one of {', '.join(TESTS)}")
    extra = group_keys(results, by or [])
    rows: dict[tuple, Row] = {}
    for r in results:
        name = metric or r["main_metric"]["name"]
        value = r["main_metric"]["value"] if metric is None else metric_value(r, metric)
        if value is None:
            continue
        key = (r["task"], r["model"], r["method"], *(str(config_value(r.get("config", {}), k)) for k in extra))
        row = rows.setdefault(key, Row(key, name))
        if r["seed"] in row.by_seed:
            raise KdxError(f"two results for {key} with seed {r['seed']}",
                           "report one sweep at a time, or name the differing config key with --by")
        row.by_seed[r["seed"]] = float(value)
        if row.paper is None:
            row.paper = paper_value(r.get("config", {}), r["task"], r["method"], name)
        teacher = (r.get("teacher_metrics") or {}).get(name)
        if teacher is not None:
            row.teacher.append(float(teacher))
    for key, row in rows.items():
        base = baseline_row(rows, key, baseline)
        if base is None or base is row:
            continue
        seeds = sorted(set(row.by_seed) & set(base.by_seed))
        row.pairs = len(seeds)
        if not seeds:
            continue
        mine, theirs = [row.by_seed[s] for s in seeds], [base.by_seed[s] for s in seeds]
        row.diff = statistics.fmean(a - b for a, b in zip(mine, theirs))
        row.p_value = paired_p_value(mine, theirs, test)
        row.effect = paired_effect_size(mine, theirs)
    return extra, [rows[k] for k in sorted(rows, key=lambda k: tuple(map(str, k)))]


def baseline_row(rows: dict[tuple, Row], key: tuple, baseline: str) -> Row | None:
    """The baseline method's row for `key`: the one with the same extra key values, else one that
    lacks (None) the keys it differs in — `--by method.loss` compares every Pro-KD loss with the
    one KD row, whose config has no method.loss."""
    exact = rows.get((key[0], key[1], baseline, *key[3:]))
    if exact is not None:
        return exact
    for other, row in rows.items():
        if other[:3] == (key[0], key[1], baseline) and all(
                theirs in (mine, "None") for mine, theirs in zip(key[3:], other[3:])):
            return row
    return None


def metric_value(results: dict, metric: str) -> float | None:
    """A task metric of the trial, or a robustness one (kdx.robustness.flatten)."""
    value = results.get("metrics", {}).get(metric)
    return value if value is not None else flatten(results.get("robustness")).get(metric)


def paper_value(config: dict, task: str, method: str, metric: str) -> float | None:
    """The paper's number for (task, method) from the config's `paper` block, when it reports `metric`."""
    paper = config_value(config, "paper") or {}
    if paper.get("metric", metric) != metric:
        return None
    value = (paper.get("values") or {}).get(method, {}).get(task)
    return None if value is None else float(value)


def no_spread(diffs: list[float]) -> bool:
    """Differences equal up to float rounding (e.g. two seeds each 3 dev examples apart: accuracy
    moves in steps of 1/N), where a t statistic would divide by a rounding error."""
    return statistics.stdev(diffs) <= 1e-9 * max(1.0, max(abs(d) for d in diffs))


def paired_p_value(a: list[float], b: list[float], test: str) -> float | None:
    """Two-sided p of "a and b differ", paired by position; None where the test is undefined
    (fewer than two pairs, identical values, or for the t-test identical differences)."""
    diffs = [x - y for x, y in zip(a, b)]
    if len(diffs) < 2 or all(d == 0 for d in diffs):
        return None
    if test == "wilcoxon":
        p = stats.wilcoxon(a, b).pvalue
    elif no_spread(diffs):
        return None
    else:
        p = stats.ttest_rel(a, b).pvalue
    return None if p is None or math.isnan(p) else float(p)


def paired_effect_size(a: list[float], b: list[float]) -> float | None:
    """Cohen's d_z: mean(a - b) / stdev(a - b) over the pairs; None with fewer than two pairs or
    identical differences (no spread to scale by). |d_z| ≈ 0.2 small, 0.5 medium, 0.8 large."""
    diffs = [x - y for x, y in zip(a, b)]
    if len(diffs) < 2 or no_spread(diffs):
        return None
    return statistics.fmean(diffs) / statistics.stdev(diffs)


def _num(x: float | None, digits: int = 4) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def table_lines(extra: list[str], rows: list[Row], baseline: str, test: str) -> list[str]:
    """A Markdown table (readable in a terminal too)."""
    papers = any(row.paper is not None for row in rows)   # the column only where a config records one
    head = ["task", "model", "method", *extra, "metric", "n", "mean ± std", *(["paper"] if papers else []),
            "teacher", f"Δ vs {baseline}", "d_z", f"p ({test}, paired)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        teacher = statistics.fmean(row.teacher) if row.teacher else None
        cells = [*row.key, row.metric, str(len(row.values)), f"{row.mean:.4f} ± {row.std:.4f}",
                 *([_num(row.paper)] if papers else []), _num(teacher),
                 "" if row.diff is None else f"{row.diff:+.4f} (n={row.pairs})",
                 "" if row.diff is None else _num(row.effect, 2),
                 "" if row.diff is None else _num(row.p_value, 3)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def table_rows(extra: list[str], rows: list[Row], baseline: str) -> list[dict]:
    """The table as records (report.csv)."""
    records = []
    for row in rows:
        record = dict(zip(["task", "model", "method", *extra], row.key))
        record.update(metric=row.metric, n=len(row.values), mean=row.mean, std=row.std,
                      teacher=statistics.fmean(row.teacher) if row.teacher else None,
                      **{f"diff_vs_{baseline}": row.diff, "effect_size_dz": row.effect, "p_value": row.p_value,
                         "pairs": row.pairs})
        records.append(record)
    return records


def write_csv(records: list[dict], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)


def unfinished_lines(folder: Path, failed: list[Path]) -> list[str]:
    """Trials of `folder` without a completed result: for a sweep folder (its launches give the
    grid) every failed, unfinished or not-started trial; elsewhere the failed results.json files."""
    from kdx.launches import sweep_grids
    from kdx.status import trial_states  # composes the sweep's grid

    if sweep_grids(folder) is not None:
        return [f"  {s.key}  {s.task} · {s.method} · seed {s.seed}: {s.state}" + (f" ({s.error})" if s.error else "")
                for s in trial_states(folder, stale_min=float("inf")) if s.state != "completed"]
    lines = []
    for path in failed:
        try:
            error = json.loads(path.read_text()).get("error") or "no error recorded"
        except json.JSONDecodeError:
            error = "unreadable"
        lines.append(f"  {path}: failed ({error.strip().splitlines()[0]})")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdx.report", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="folders searched for results.json (recursively)")
    parser.add_argument("--baseline", default="finetune", help="method the others are compared with")
    parser.add_argument("--test", default="ttest", choices=TESTS, help="paired test over seeds")
    parser.add_argument("--metric", default=None, help="a metric other than each trial's main metric")
    parser.add_argument("--by", action="append", default=[],
                        help="extra config key that names a row (dotted, e.g. method.loss); repeatable")
    parser.add_argument("--out", type=Path, default=None,
                        help="also write report.md, report.csv and PNG plots (matplotlib) into this folder")
    args = parser.parse_args(argv)
    try:
        results, unfinished = [], []
        for folder in args.dirs:
            ok, bad = load_results(folder)
            results += ok
            unfinished += unfinished_lines(folder, bad)
        if not results:
            raise KdxError(f"no completed results.json under {', '.join(map(str, args.dirs))}",
                           "run trials first (python -m kdx -m ... hydra.sweep.dir=DIR), then report DIR")
        extra, rows = summarize(results, args.baseline, args.test, args.by, args.metric)
        lines = table_lines(extra, rows, args.baseline, args.test)
        if unfinished:
            lines += ["", f"{len(unfinished)} trial(s) without a completed result:", *unfinished]
        if args.out is not None:
            from kdx.plots import plot_report

            args.out.mkdir(parents=True, exist_ok=True)
            write_csv(table_rows(extra, rows, args.baseline), args.out / "report.csv")
            figures = plot_report(rows, extra, args.baseline, args.out)
            (args.out / "report.md").write_text("\n".join(
                [*lines, "", *(f"![{p.stem}]({p.name})" for p in figures)]) + "\n")
    except KdxError as err:
        print(f"kdx.report: error: {err}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    if args.out is not None:
        print(f"\nwritten: {args.out / 'report.md'}, report.csv and {len(figures)} figure(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
