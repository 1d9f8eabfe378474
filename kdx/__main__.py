"""`python -m kdx [overrides]`: one trial (or, with -m, a sweep of trials) from the Hydra config."""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from kdx import run
from kdx.errors import KdxError
from kdx import slurm, slurm_launcher
from kdx.configs import config_dir
from kdx.trial import register_resolvers


register_resolvers()
slurm.register_resolvers()


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def _hydra_entry(cfg: DictConfig):
    try:
        return run.main(cfg)
    except KdxError as err:
        print(f"kdx: error: {err}", file=sys.stderr)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            return None  # recorded as failed in the trial's results.json; the sweep goes on
        sys.exit(2)


def main():
    slurm_launcher.install()
    _hydra_entry()


if __name__ == "__main__":
    main()
