"""Where kdx's Hydra configs live (importable without the training stack)."""

from pathlib import Path


def config_dir() -> str:
    """conf/ ships inside the wheel as kdx/conf; in a checkout it sits next to kdx/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").exists():
            return str(candidate)
    raise RuntimeError(f"kdx config folder not found next to {here}")
