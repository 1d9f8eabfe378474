"""Metric loggers for a trial: CSV (default), Weights & Biases, or none.

W&B conventions (docs/results.md, README): one run per trial, named by the trial key and with the
trial key as its run id (a resumed or requeued trial continues the same run), grouped by sweep,
job_type = method, tagged with task, model, student init and seed, the resolved config attached,
the final metrics in its summary, files under the trial dir, and always finished (exit_code=1 on
failure) so that the next multirun job does not log into this run.
"""

from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from omegaconf import DictConfig

from kdx.errors import KdxError


class TrialLoggers:
    def __init__(self, cfg: DictConfig, out_dir: Path, key: str, resolved_config: dict, group: str | None):
        self.cfg = cfg.logger
        self.out_dir = out_dir
        self.key = key
        self.resolved_config = resolved_config
        self.group = group
        self.task, self.method = cfg.task.name, cfg.method.name
        student = cfg.model.get("student") or {}
        self.tags = [self.task, self.method, cfg.model.name, f"init:{student.get('init', 'pretrained')}",
                     f"seed:{cfg.seed}"]
        self._wandb: WandbLogger | None = None
        if self.cfg.name not in ("csv", "wandb", "none"):
            raise KdxError(f"logger={self.cfg.name!r} is unknown", "use logger=csv, logger=wandb or logger=none")

    def for_phase(self, phase_name: str | None) -> list[Logger]:
        """Loggers for one Trainer (one per phase; W&B keeps a single run across phases)."""
        loggers: list[Logger] = []
        if self.cfg.name == "csv" or (self.cfg.name == "wandb" and self.cfg.get("also_csv", True)):
            loggers.append(CSVLogger(save_dir=str(self.out_dir), name="csv", version=phase_name or ""))
        if self.cfg.name == "wandb":
            loggers.append(self.wandb())
        return loggers

    def wandb(self) -> WandbLogger:
        if self._wandb is None:
            try:
                import wandb  # noqa: F401  (optional dependency: only logger=wandb needs it)
            except ImportError:
                raise KdxError("logger=wandb needs the wandb package", "pip install wandb (or pip install 'kdx[wandb]')") from None
            self._wandb = WandbLogger(
                project=self.cfg.project, entity=self.cfg.get("entity"), name=self.key,
                id=self.key, resume="allow",   # the trial's run, also after a resume or requeue
                group=self.cfg.get("group") or self.group or self.task, job_type=self.cfg.get("job_type"),
                tags=[*self.tags, *list(self.cfg.get("tags") or [])],
                save_dir=str(self.out_dir), config=self.resolved_config,
                mode=self.cfg.get("mode") or None, reinit="finish_previous",
            )
        return self._wandb

    def log_summary(self, summary: dict) -> None:
        if self._wandb is not None:
            for name, value in summary.items():
                self._wandb.experiment.summary[name] = value

    def finish(self, failed: bool) -> None:
        """Close the W&B run whatever happened (called from `finally`)."""
        if self.cfg.name != "wandb":
            return
        import wandb  # optional dependency, present when logger=wandb got this far

        if wandb.run is not None:
            wandb.finish(exit_code=1 if failed else 0)
        self._wandb = None
