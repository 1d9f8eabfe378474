"""Loading saved weights into a model, with errors that say which file and why."""

import hashlib
from pathlib import Path

import torch
import torch.nn as nn

from kdx.errors import KdxError


def load_state(model: nn.Module, path: str | Path) -> nn.Module:
    """Loads a state dict file (a teacher store's teacher.pt, a trajectory checkpoint) into `model`."""
    path = Path(path)
    if not path.exists():
        raise KdxError(f"teacher checkpoint {path} does not exist",
                       "set model.teacher.checkpoint to a fine-tuned teacher state dict (e.g. a store's teacher.pt)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise KdxError(f"teacher checkpoint {path} does not fit the teacher architecture: "
                       f"{str(err).splitlines()[0][:300]}",
                       "use a checkpoint saved for this model.teacher config and task (same label count)") from None
    return model


def check_label_spaces(teacher: nn.Module, student: nn.Module, num_labels: int) -> None:
    """Teacher and student must agree on the label space."""
    t_labels = getattr(getattr(teacher, "config", None), "num_labels", None)
    s_labels = getattr(getattr(student, "config", None), "num_labels", None)
    if t_labels is not None and s_labels is not None and t_labels != s_labels:
        raise KdxError(f"teacher has {t_labels} labels but student has {s_labels}",
                       f"both must have the task's {num_labels} labels: use checkpoints for this task "
                       "or base models without a classification head")


def weights_digest(model: nn.Module, length: int = 16) -> str:
    """A content hash of every parameter and buffer (names, shapes and values): names what was
    computed from exactly these weights, e.g. a teacher's cached generations."""
    hasher = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        hasher.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        hasher.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return hasher.hexdigest()[:length]
