"""Teacher-assistant KD (Mirzadeh et al., AAAI 2020), the baseline of Annealing-KD and
Continuation-KD (METHODS.md §3): teacher → assistant → student, each step vanilla KD

    L = (1 − α)·CE(y, σ(z_S)) + α·τ²·KL(σ(z_A/τ) ‖ σ(z_S/τ)).

The assistant (`model.assistant`, a model spec sized between teacher and student, with its own
`init`) is first distilled from the fine-tuned teacher with the same KD loss and training recipe
as the student, once, into the teacher store under a key of teacher + assistant + recipe; the
student then learns from the frozen assistant. `teacher_metrics` in results.json are the
assistant's.
"""

import json
from pathlib import Path

import lightning as L
from filelock import FileLock
from omegaconf import DictConfig, OmegaConf

from kdx.errors import KdxError
from kdx.methods.kd import KD
from kdx.models.student import build, build_student
from kdx.results import write_json_atomic
from kdx.teacher import INFO_FILE, TEACHER_FILE, Teacher, fit_into_store, load_state, store_key
from kdx.trial import digest


class TAKD(KD):
    needs_teacher = True

    def __init__(self, name: str = "takd", alpha: float = 0.5, temperature: float = 2.0,
                 tau_squared: bool = True, assistant_epochs: int | None = None):
        super().__init__(name=name, alpha=alpha, temperature=temperature, tau_squared=tau_squared)
        self.assistant_epochs = assistant_epochs

    def teacher_for_student(self, teacher: Teacher, cfg: DictConfig, spec, vocab_size, make_datamodule) -> Teacher:
        """The assistant, distilled from `teacher` (once; then read from the store)."""
        aspec = cfg.model.get("assistant")
        if aspec is None:
            raise KdxError(f"method=takd needs a teacher assistant, but model={cfg.model.name} has no model.assistant",
                           "add an `assistant:` model spec (between teacher and student in size) to the model "
                           "pair, e.g. as in conf/model/tiny.yaml, or pass +model.assistant=...")
        folder = self.assistant_dir(cfg)
        folder.parent.mkdir(parents=True, exist_ok=True)

        def source_for_truncation(which: str):
            return teacher.model if which == "finetuned" else build(cfg.model.teacher, spec.num_labels, vocab_size)

        def fresh_assistant():
            return build_student(aspec, spec.num_labels, vocab_size, source_for_truncation)

        with FileLock(str(folder) + ".lock"):
            if not (folder / INFO_FILE).exists():
                self.distil_assistant(cfg, spec, fresh_assistant, teacher, make_datamodule, folder)
        info = json.loads((folder / INFO_FILE).read_text())
        return Teacher(load_state(fresh_assistant(), folder / TEACHER_FILE), source=str(folder),
                       metrics=info["metrics"])

    def recipe(self, cfg: DictConfig) -> dict:
        """Everything that decides the assistant's weights besides the teacher."""
        return {"assistant": OmegaConf.to_container(cfg.model.assistant, resolve=True),
                "kd": {"alpha": self.alpha, "temperature": self.temperature, "tau_squared": self.tau_squared},
                "epochs": self.epochs(cfg), "max_steps": cfg.trainer.get("max_steps"),
                "optim": OmegaConf.to_container(cfg.optim, resolve=True), "batch_size": cfg.data.batch_size}

    def assistant_dir(self, cfg: DictConfig) -> Path:
        tspec = cfg.model.teacher
        teacher_id = {"store": store_key(cfg), "checkpoint": tspec.get("checkpoint"),
                      "finetuned": tspec.get("finetuned", False)}
        key = digest({"teacher": teacher_id, "recipe": self.recipe(cfg), "seed": cfg.seed})
        return Path(cfg.paths.cache_dir) / "teachers" / f"{cfg.task.name.replace('/', '_')}-assistant-{key}"

    def epochs(self, cfg: DictConfig) -> int:
        return int(self.assistant_epochs if self.assistant_epochs is not None else cfg.trainer.max_epochs)

    def distil_assistant(self, cfg, spec, fresh_assistant, teacher: Teacher, make_datamodule, folder: Path):
        from kdx.distill import DistillationModule

        print(f"[kdx] distilling the teacher assistant once into the teacher store: {folder}")
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        kd = KD(alpha=self.alpha, temperature=self.temperature, tau_squared=self.tau_squared)
        module = DistillationModule(fresh_assistant(), kd, spec, cfg.optim, teacher.model)
        metrics = fit_into_store(cfg, spec, module, make_datamodule(cfg.data.batch_size), folder,
                                 max_epochs=self.epochs(cfg))
        write_json_atomic(folder / INFO_FILE, {"task": cfg.task.name, "seed": cfg.seed, "metrics": metrics,
                                               "teacher_source": teacher.source, "recipe": self.recipe(cfg)})
