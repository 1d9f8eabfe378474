"""`python -m kdx [overrides]`: one trial (or, with -m, a sweep of trials) from the Hydra config."""

import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from kdx import run, slurm, slurm_launcher
from kdx.configs import config_dir
from kdx.errors import KdxError
from kdx.interrupt import TrialInterrupted
from kdx.knobs import unknown_key_fix
from kdx.lock import TrialBusy
from kdx.trial import register_resolvers

EXIT_INVALID = 2   # a setting, a file, a model the user gave is wrong
EXIT_BUSY = 3      # the trial is running in another process (lock.on_busy=exit)


register_resolvers()
slurm.register_resolvers()


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def _hydra_entry(cfg: DictConfig):
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        return run.main(cfg)
    except TrialBusy as err:
        print(f"kdx: {err}", file=sys.stderr)
        if multirun:
            return None  # the other launch runs it; the sweep goes on
        sys.exit(EXIT_BUSY)
    except TrialInterrupted as err:
        print(f"kdx: {err}: recorded as interrupted; launch the same command to resume", file=sys.stderr)
        sys.exit(128 + err.signum)
    except KdxError as err:
        print(f"kdx: error: {err}", file=sys.stderr)
        if multirun:
            return None  # recorded as failed in the trial's results.json; the sweep goes on
        sys.exit(EXIT_INVALID)


def composition_error(err: ConfigCompositionException) -> KdxError | None:
    """Hydra's "Key 'alpah' is not in struct" as a kdx error naming the closest valid key."""
    cause = err.__cause__
    if not isinstance(cause, (ConfigKeyError, ConfigAttributeError)) or getattr(cause, "parent_node", None) is None:
        return None
    key = str(cause.full_key)
    return KdxError(f"{key}: no such setting", unknown_key_fix(key, list(cause.parent_node.keys())))


def main():
    slurm_launcher.install()
    # Let composition errors reach us (Hydra would print them and exit 1) to add the closest key.
    reraise = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        _hydra_entry()
    except ConfigCompositionException as err:
        if reraise:
            raise
        known = composition_error(err)
        print(f"kdx: error: {known if known is not None else err}", file=sys.stderr)
        sys.exit(EXIT_INVALID)
    finally:
        if not reraise:
            os.environ.pop("HYDRA_FULL_ERROR", None)


if __name__ == "__main__":
    main()
