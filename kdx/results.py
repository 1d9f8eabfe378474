"""The results.json contract (docs/results.md): one file per trial, written atomically."""

import json
import os
import tempfile
from pathlib import Path

import lightning
import torch
import transformers

import kdx
from kdx.checkpoints import set_aside

RESULTS_FILE = "results.json"


def write_json_atomic(path: Path, data: dict) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=False, default=float)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_results(trial_dir: Path) -> dict | None:
    path = Path(trial_dir) / RESULTS_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):   # written atomically, so damaged from outside
        set_aside(path, "not JSON; the trial runs again")
        return None


def is_completed(trial_dir: Path, key: str) -> bool:
    results = read_results(trial_dir)
    return bool(results) and results.get("status") == "completed" and results.get("trial_key") == key


def versions() -> dict:
    return {"kdx": kdx.__version__, "torch": torch.__version__.split("+")[0],
            "transformers": transformers.__version__, "lightning": lightning.__version__}
