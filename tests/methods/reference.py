"""Shared helpers of the method tests: reference math written out by hand, and builders.

Reference math: every formula a method implements, written out here independently of kdx.losses
(plain Python on lists, or exp/log/sum on tensors), so a test compares the method's terms with
numbers it did not compute itself.

Builders: `logits_step` (a TrainStep over fixed logits, no model), the tiny text task with its
tokenizer and a BERT teacher/student pair (`make_tiny`, `models`, `a_batch`), `train_step` (a
TrainStep over real models), `context` (a SetupContext) and `fit` (a short Lightning fit of a
DistillationModule without checkpoints or validation).
"""

import csv
import math
from types import SimpleNamespace

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf

from kdx.methods.base import Budget, Progress, SetupContext, TrainStep
from kdx.methods.mate import GENERATOR
from kdx.models.hf import bert_from_arch
from kdx.models.outputs import ModelOutputs
from kdx.models.tokenizer import build_tokenizer
from kdx.tasks.base import model_inputs
from kdx.tasks.synthetic import SyntheticTask

# ---- fixed logits ------------------------------------------------------------------------------
STUDENT = [[1.0, -0.5, 0.3], [0.2, 0.1, -1.2], [-0.7, 2.0, 0.4], [0.5, 0.5, 0.0]]
TEACHER = [[2.5, -1.0, 0.0], [0.0, 1.5, -2.0], [-1.0, 3.0, 1.0], [0.4, 0.6, 0.1]]
LABELS = [0, 1, 1, 2]


# ---- plain-Python reference formulas (lists of rows) -------------------------------------------
def softmax(row, t=1.0):
    exps = [math.exp(v / t) for v in row]
    total = sum(exps)
    return [e / total for e in exps]


def ce_by_hand(student, labels):
    """mean over rows of −log softmax(z_S)_y."""
    return sum(-math.log(softmax(row)[y]) for row, y in zip(student, labels)) / len(labels)


def soft_ce_by_hand(student, targets):
    """mean over rows of −Σ_c q_c · log softmax(z_S)_c against given target distributions."""
    return sum(-sum(q * math.log(p) for q, p in zip(target, softmax(row)))
               for row, target in zip(student, targets)) / len(student)


def kl_probs_by_hand(student, teacher_probs, t):
    """KL(teacher_probs ‖ softmax(z_S/t)), averaged over rows."""
    return sum(sum(p * math.log(p / q) for p, q in zip(tp, softmax(row, t)))
               for row, tp in zip(student, teacher_probs)) / len(student)


def kl_by_hand(student, teacher, t):
    """KL(softmax(z_T/t) ‖ softmax(z_S/t)), averaged over rows (no τ² factor)."""
    return kl_probs_by_hand(student, [softmax(row, t) for row in teacher], t)


def mse_by_hand(a, b):
    """mean over every entry of (a − b)²."""
    pairs = [(x, y) for ra, rb in zip(a, b) for x, y in zip(ra, rb)]
    return sum((x - y) ** 2 for x, y in pairs) / len(pairs)


def official_annealing_temps(e1, tau_max):
    """The official Annealing-KD loop: temp starts at 1, +1 at epoch e when e % (E1//τ_max) == 0
    and e > 0, clamped at τ_max."""
    temps, temp = [], 1
    for epoch in range(e1):
        if epoch % (e1 // tau_max) == 0 and epoch > 0:
            temp = min(tau_max, temp + 1)
        temps.append(temp)
    return temps


def annealing_phi_by_hand(epoch, e1, tau_max):
    """Φ = temp/τ_max at 0-based `epoch` of an E1-epoch phase 1 (the official loop)."""
    return official_annealing_temps(e1, tau_max)[epoch] / tau_max


# ---- the same on tensors (exp/log/sum written out, no torch.nn.functional) ----------------------
def by_hand_log_softmax(logits):
    return logits - logits.exp().sum(-1, keepdim=True).log()


def by_hand_ce(logits, labels):
    return -by_hand_log_softmax(logits)[torch.arange(len(labels)), labels].mean()


def by_hand_soft_ce(student_logits, teacher_logits):
    """mean_b [ −Σ_c softmax(z_T)_bc · log softmax(z_S)_bc ]."""
    p_t = by_hand_log_softmax(teacher_logits).exp()
    return -(p_t * by_hand_log_softmax(student_logits)).sum(-1).mean()


def by_hand_kl(student_logits, teacher_logits, tau):
    """τ²·mean_b KL(softmax(z_T/τ) ‖ softmax(z_S/τ))."""
    log_p_t, log_p_s = by_hand_log_softmax(teacher_logits / tau), by_hand_log_softmax(student_logits / tau)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1).mean() * tau ** 2


def by_hand_mse(a, b):
    return ((a - b) ** 2).sum() / a.numel()


# ---- a TrainStep over fixed logits ---------------------------------------------------------------
def progress(epoch=0, step=0, max_epochs=10, total_steps=100, phase=0) -> Progress:
    return Progress(epoch=epoch, step=step, max_epochs=max_epochs, total_steps=total_steps, phase=phase)


def logits_step(student, teacher, labels, epoch=0, phase=0, max_epochs=10, step=0, total_steps=100,
                family="classification") -> TrainStep:
    """A TrainStep whose student and teacher "forward passes" return the given logits."""
    s = student if isinstance(student, torch.Tensor) else torch.tensor(student, requires_grad=True)
    t = teacher if isinstance(teacher, torch.Tensor) else torch.tensor(teacher)
    return TrainStep(batch={}, labels=torch.as_tensor(labels), family=family,
                     progress=progress(epoch, step, max_epochs, total_steps, phase), inputs={},
                     student_forward=lambda **_: ModelOutputs(logits=s),
                     teacher_forward=lambda **_: ModelOutputs(logits=t))


# ---- the tiny text task, tokenizer and BERT pair ---------------------------------------------------
ARCH = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=64)
TEACHER_ARCH = {**ARCH, "hidden_size": 24, "intermediate_size": 48}
OPTIM = OmegaConf.create({"name": "adamw", "lr": 1e-3, "weight_decay": 0.01, "schedule": "linear"})
TRAIN_SIZE, BATCH_SIZE = 40, 8          # 5 batches an epoch
NUM_LABELS = 3


def make_tiny(cache_dir) -> SimpleNamespace:
    """A 3-class synthetic text task, its WordPiece tokenizer and a DataModule builder."""
    task = SyntheticTask(train_size=TRAIN_SIZE, val_size=16, num_labels=NUM_LABELS)
    tokenizer = build_tokenizer(OmegaConf.create({"kind": "wordpiece", "vocab_size": 200}), task, cache_dir)
    data = OmegaConf.create({"batch_size": BATCH_SIZE, "eval_batch_size": 16, "max_length": 32, "num_workers": 0})
    return SimpleNamespace(task=task, spec=task.spec, tokenizer=tokenizer, vocab=len(tokenizer),
                           datamodule=lambda: task.datamodule(tokenizer, data))


def models(tiny, seed=0, init_range=0.02):
    """(teacher in eval mode, student): random BERTs over the tiny vocabulary. At BERT's default
    init (0.02) their logits hardly depend on the input; a wider `init_range` (e.g. 0.5) makes
    losses on perturbed and clean inputs tell apart."""
    torch.manual_seed(seed)
    teacher = bert_from_arch(NUM_LABELS, tiny.vocab, initializer_range=init_range, **TEACHER_ARCH).eval()
    student = bert_from_arch(NUM_LABELS, tiny.vocab, initializer_range=init_range, **ARCH)
    return teacher, student


def a_batch(tiny) -> dict:
    dm = tiny.datamodule()
    dm.setup()
    return next(iter(dm.train_dataloader()))


def content_tokens(batch_or_inputs) -> torch.Tensor:
    """Real, non-special tokens (ids 0-4 are the WordPiece specials)."""
    return (batch_or_inputs["input_ids"] > 4) & batch_or_inputs["attention_mask"].bool()


def fixed_perturbation(tiny, batch, seed=1):
    """(M, one-hot ŵ, the replacement tokens): ~30% of the content tokens replaced by random ids."""
    g = torch.Generator().manual_seed(seed)
    ids = batch["input_ids"]
    mask = (torch.rand(ids.shape, generator=g) < 0.3) & content_tokens(batch)
    tokens = torch.randint(5, tiny.vocab, ids.shape, generator=g)
    return mask, torch.nn.functional.one_hot(tokens, tiny.vocab).float(), tokens


def perturbed_by_hand(model, batch, mask, tokens):
    """The model's logits on x̃: its own embedding rows of the new tokens where M, else of x."""
    table = model.get_input_embeddings().weight
    embeds = torch.where(mask.unsqueeze(-1), table[tokens], table[batch["input_ids"]])
    return model(**{**model_inputs(batch), "input_ids": None, "inputs_embeds": embeds}).logits


def generator_terms_on_fixed_perturbation(method, tiny, student, teacher, monkeypatch):
    """The generator's terms of a set-up MATE-style `method` on a fixed x̃ (sample_perturbation
    patched), with the perturbed logits computed by hand: (terms, z_S(x̃), z_T(x̃), M, ŵ). ŵ
    requires grad, so a test can check the generator's gradient reaches it."""
    batch = a_batch(tiny)
    mask, one_hot, tokens = fixed_perturbation(tiny, batch)
    one_hot.requires_grad_(True)
    monkeypatch.setattr(method, "sample_perturbation", lambda step: (mask, one_hot))
    terms = method.extra_losses(GENERATOR, train_step(batch, student, teacher))
    with torch.no_grad():
        student_adv = perturbed_by_hand(student, batch, mask, tokens)
        teacher_adv = perturbed_by_hand(teacher, batch, mask, tokens)
    return terms, student_adv, teacher_adv, mask, one_hot


def train_step(batch, student, teacher, phase=0, epoch=0, step=0, max_epochs=4, total_steps=40) -> TrainStep:
    """A TrainStep over real models, as the LightningModule builds it (teacher without grad)."""
    def teacher_forward(**inputs):
        with torch.no_grad():
            return ModelOutputs(logits=teacher(**inputs).logits)

    return TrainStep(batch=batch, labels=batch["labels"], family="classification",
                     progress=progress(epoch, step, max_epochs, total_steps, phase), inputs=model_inputs(batch),
                     student_forward=lambda **inputs: ModelOutputs(logits=student(**inputs).logits),
                     teacher_forward=teacher_forward)


def context(tiny, student, teacher=None, max_epochs=4, max_steps=-1, **kwargs) -> SetupContext:
    return SetupContext(spec=tiny.spec, student=student, tokenizer=tiny.tokenizer, teacher=teacher,
                        budget=Budget(max_epochs=max_epochs, max_steps=max_steps), **kwargs)


def fit(module, tiny, callbacks=(), max_epochs=1):
    """A short deterministic fit on the tiny task: no logger, checkpoints or validation."""
    trainer = L.Trainer(max_epochs=max_epochs, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                        num_sanity_val_steps=0, enable_model_summary=False, limit_val_batches=0,
                        callbacks=list(callbacks), deterministic=True)
    trainer.fit(module, datamodule=tiny.datamodule())
    return trainer


class ParameterWatch(Callback):
    """Per training batch, whether the method's `watched` module's weights and the student's changed."""

    def __init__(self, watched: str):
        self.watched = watched
        self.changed = []

    def snapshot(self, module):
        return ([p.detach().clone() for p in getattr(module.method, self.watched).parameters()],
                [p.detach().clone() for p in module.student.parameters()])

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.before = self.snapshot(module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        after = self.snapshot(module)
        self.changed.append(tuple(any(not torch.equal(a, b) for a, b in zip(old, new))
                                  for old, new in zip(self.before, after)))


def alternation(generator_steps, student_steps, batches):
    """(generator changed, student changed) per batch of a generator/student cycle, written out."""
    cycle = generator_steps + student_steps
    return [(i % cycle < generator_steps, i % cycle >= generator_steps) for i in range(batches)]


# ---- end-to-end runs ---------------------------------------------------------------------------------
# The tiny default, small enough for about a second per method: 96 examples = 3 batches an epoch.
TINY_RUN = ["task=synthetic", "task.train_size=96", "task.val_size=32", "teacher_training.max_epochs=1",
            "trainer.max_epochs=2", "trainer.log_every_n_steps=1"]


def logged_columns(run_dir) -> set[str]:
    """Every column of the trial's CSV logs (all phases)."""
    columns = set()
    for log in (run_dir / "csv").rglob("metrics.csv"):
        with open(log) as f:
            columns |= set(next(csv.reader(f), []))
    return columns
