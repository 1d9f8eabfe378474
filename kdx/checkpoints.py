"""Files that survive kills: written atomically, checked before they are read, set aside when damaged.

Every checkpoint and weight file kdx writes goes to a temporary file in the same folder, is flushed
to disk, then renamed over the target: a reader sees the old file or the new one, never half of
one. A file damaged anyway (a disk full, a copy cut short, a file system without atomic rename)
is detected on the next read (`is_intact`) and renamed to `<name>.damaged-<time>` (`set_aside`),
never deleted, with a message; the caller then falls back (an older checkpoint, a rerun).
"""

import os
import tempfile
import time
import zipfile
from pathlib import Path

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


def save_atomic(obj, path: Path) -> None:
    """`torch.save(obj, path)`, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, writing through `save_atomic` (local paths)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if "://" in str(path):   # remote storage: Lightning's own writer
            return super().save_checkpoint(checkpoint, path, storage_options)
        save_atomic(checkpoint, Path(path))


def is_intact(path: Path) -> bool:
    """Whether a torch.save file is complete: a zip archive whose every entry matches its CRC
    (truncation loses the archive's directory; a flipped byte fails a CRC)."""
    path = Path(path)
    try:
        if not zipfile.is_zipfile(path):
            torch.load(path, map_location="cpu", weights_only=False)   # the legacy (non-zip) format
            return True
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None and any(n.endswith("data.pkl") for n in archive.namelist())
    except Exception:
        return False


def set_aside(path: Path, why: str) -> Path:
    """Renames a damaged file or folder out of the way (kept for inspection) and says so."""
    path = Path(path)
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    os.replace(path, aside)
    print(f"[kdx] {path} is damaged ({why}); set aside as {aside.name}", flush=True)
    return aside


def remove_partial_writes(folder: Path) -> None:
    """Deletes the temporary files of writes that a kill cut short (never a finished file)."""
    for tmp in Path(folder).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
