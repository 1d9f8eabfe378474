"""The short end-of-trial summary printed to the terminal."""

from pathlib import Path

from rich.console import Console
from rich.table import Table


def _fmt(value) -> str:
    return "—" if value is None else (f"{value:.4f}" if isinstance(value, float) else f"{value:,}")


def print_summary(results: dict, out_dir: Path) -> None:
    main = results["main_metric"]["name"]
    teacher = (results.get("teacher_metrics") or {}).get(main)
    table = Table(title=f"kdx · {results['task']} · {results['method']} · {results['model']} · seed {results['seed']}")
    table.add_column("")
    table.add_column(main, justify="right")
    table.add_column("parameters", justify="right")
    table.add_row("teacher", _fmt(teacher), _fmt(results["params"]["teacher"]))
    table.add_row("student", _fmt(results["main_metric"]["value"]), _fmt(results["params"]["student"]))
    console = Console()
    console.print(table)
    console.print(f"wall time {results['train_time_s']:.1f} s · {results['steps']} steps · "
                  f"trial {results['trial_key']}")
    console.print(f"outputs: {out_dir}  (results.json, checkpoints/, csv/)")
