"""PNG figures of a report (`python -m kdx.report DIR --out FOLDER`; needs matplotlib, the
`kdx[plots]` extra):

- `bars-<model>.png`: per task, each method's mean over seeds with the standard deviation as error
  bar, pre-trained and randomly initialised students side by side;
- `heatmap-<model>.png`: method × task of the mean paired difference to the baseline, one panel per
  student init (pre-trained | random), `*` where the paired test gives p < 0.05.
"""

from collections import defaultdict
from pathlib import Path

from kdx.errors import KdxError

SIGNIFICANT = 0.05


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display on a cluster
        import matplotlib.pyplot as plt
    except ImportError:
        raise KdxError("plots need matplotlib", "pip install matplotlib (or pip install 'kdx[plots]')") from None
    return plt


def _init_of(row, extra: list[str]) -> str:
    if "model.student.init" in extra:
        return str(row.key[3 + extra.index("model.student.init")])
    return "students"


def plot_report(rows, extra: list[str], baseline: str, out_dir: Path) -> list[Path]:
    """Writes the figures for `rows` (kdx.report.summarize) into `out_dir`; returns their paths."""
    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    by_model = defaultdict(list)
    for row in rows:
        by_model[row.key[1]].append(row)
    written = []
    for model, model_rows in sorted(by_model.items()):
        name = model.replace("/", "_")
        written.append(_bars(plt, model, model_rows, extra, out_dir / f"bars-{name}.png"))
        heat = _heatmap(plt, model, model_rows, extra, baseline, out_dir / f"heatmap-{name}.png")
        if heat is not None:
            written.append(heat)
    return written


def _bars(plt, model, rows, extra, path: Path) -> Path:
    tasks = sorted({r.key[0] for r in rows})
    methods = sorted({r.key[2] for r in rows})
    inits = sorted({_init_of(r, extra) for r in rows})
    cols = min(4, len(tasks))
    nrows = -(-len(tasks) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows), squeeze=False)
    width = 0.8 / len(inits)
    for ax, task in zip(axes.flat, tasks):
        metric = None
        for i, init in enumerate(inits):
            found = {r.key[2]: r for r in rows if r.key[0] == task and _init_of(r, extra) == init}
            xs = [m + (i - (len(inits) - 1) / 2) * width for m in range(len(methods))]
            means = [found[m].mean if m in found else float("nan") for m in methods]
            stds = [found[m].std if m in found else 0.0 for m in methods]
            ax.bar(xs, means, width, yerr=stds, capsize=3, label=init)
            metric = metric or next((r.metric for r in found.values()), None)
        ax.set_title(task)
        ax.set_ylabel(metric or "")
        ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right", fontsize=8)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"{model}: mean ± std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _heatmap(plt, model, rows, extra, baseline, path: Path) -> Path | None:
    compared = [r for r in rows if r.diff is not None]
    if not compared:
        return None
    tasks = sorted({r.key[0] for r in compared})
    methods = sorted({r.key[2] for r in compared})
    inits = sorted({_init_of(r, extra) for r in compared})
    span = max(abs(r.diff) for r in compared) or 1.0
    fig, axes = plt.subplots(1, len(inits), figsize=(1.3 * len(tasks) * len(inits) + 2, 0.6 * len(methods) + 1.8),
                             squeeze=False)
    image = None
    for index, (ax, init) in enumerate(zip(axes.flat, inits)):
        cells = {(r.key[2], r.key[0]): r for r in compared if _init_of(r, extra) == init}
        grid = [[cells[(m, t)].diff if (m, t) in cells else float("nan") for t in tasks] for m in methods]
        image = ax.imshow(grid, cmap="RdBu", vmin=-span, vmax=span, aspect="auto")
        for i, m in enumerate(methods):
            for j, t in enumerate(tasks):
                row = cells.get((m, t))
                if row is None:
                    continue
                mark = "*" if row.p_value is not None and row.p_value < SIGNIFICANT else ""
                ax.text(j, i, f"{row.diff:+.3f}{mark}", ha="center", va="center", fontsize=7,
                        color="white" if abs(row.diff) > 0.6 * span else "black")
        ax.set_title(init)
        ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right", fontsize=8)
        # method names on the first panel only: repeated, they run into the panel on their left
        ax.set_yticks(range(len(methods)), methods if index == 0 else [], fontsize=8)
    fig.colorbar(image, ax=list(axes.flat), shrink=0.8, label=f"mean Δ vs {baseline}")
    fig.suptitle(f"{model}: paired difference to {baseline} (* p < {SIGNIFICANT})", y=1.04)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def heatmap(matrix: list[list[float]], path: Path, title: str) -> None:
    """A square matrix (e.g. layer × layer attention similarity) as a heatmap with a colour bar."""
    plt = _pyplot()
    size = len(matrix)
    fig, ax = plt.subplots(figsize=(2 + 0.22 * size, 1.5 + 0.2 * size))
    image = ax.imshow(matrix, cmap="viridis")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("layer")
    ax.set_ylabel("layer")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bar_chart(values: list[float], path: Path, title: str, highlighted: set[int] = frozenset(),
              legend: str = "") -> None:
    """One bar per item, the y axis starting just below the smallest value so small differences
    show; `highlighted` items in another colour, named by `legend`."""
    plt = _pyplot()
    low, high = min(values), max(values)
    fig, ax = plt.subplots(figsize=(2 + 0.22 * len(values), 3))
    colours = ["tab:orange" if i in highlighted else "tab:blue" for i in range(len(values))]
    ax.bar(range(len(values)), values, color=colours, label=None)
    ax.set_ylim(low - 0.1 * ((high - low) or abs(high) or 1.0), high + 0.02 * ((high - low) or 1.0))
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("layer")
    if legend and highlighted:
        ax.bar([], [], color="tab:orange", label=legend)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
