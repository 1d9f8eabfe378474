"""The loss layer that methods compose (docs/methods.md §0).

Low level: divergences between two sets of logits (softmax always over the last dim, so token-level
logits (B, T, V) work like sequence-level ones (B, C), with an optional (B, T) mask).
Middle level: the objectives that several methods share — the task's own loss per task family,
the weighted `(1−α)·CE + α·KD` objective with its regression branch, and Annealing-KD's scaled
teacher. A method file composes these; it does not re-write them.
"""

import math

import torch
import torch.nn.functional as F

from kdx.errors import KdxError

IGNORE_INDEX = -100   # token-level labels that no loss reads (padding, prompt tokens)


# ---- low level ------------------------------------------------------------------------------
def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of `values` over the positions where `mask` is true (all positions without a mask)."""
    if mask is None:
        return values.reshape(-1).mean() if values.dim() > 1 else values.mean()
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1)


def kl_per_item(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(σ(z_T/τ) ‖ σ(z_S/τ)) for every row of the last dim."""
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    return (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
          tau_squared: bool = True, mask: torch.Tensor | None = None) -> torch.Tensor:
    """τ²·KL(σ(z_T/τ) ‖ σ(z_S/τ)), mean over samples (over unmasked tokens when `mask` (B, T) is
    given; over every token of token-level logits without one)."""
    kl = masked_mean(kl_per_item(student_logits, teacher_logits, temperature), mask)
    return kl * temperature**2 if tau_squared else kl


def reverse_kl_per_item(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                        temperature: float = 1.0) -> torch.Tensor:
    """KL(σ(z_S/τ) ‖ σ(z_T/τ)) for every row of the last dim: mode-seeking (the student is
    penalised for mass where the teacher has little)."""
    return kl_per_item(teacher_logits, student_logits, temperature)


def generalised_jsd_per_item(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float,
                             temperature: float = 1.0) -> torch.Tensor:
    """β·KL(p_T ‖ m) + (1−β)·KL(p_S ‖ m) with m = β·p_T + (1−β)·p_S, for every row of the last dim
    (p = σ(z/τ)); β = 0.5 is the Jensen–Shannon divergence."""
    if not 0 < beta < 1:
        raise ValueError(f"generalised JSD needs 0 < beta < 1, got {beta} (use forward or reverse KL at the ends)")
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_m = torch.logsumexp(torch.stack([log_p_teacher + math.log(beta), log_p_student + math.log(1 - beta)]), dim=0)
    kl_teacher = (log_p_teacher.exp() * (log_p_teacher - log_m)).sum(-1)
    kl_student = (log_p_student.exp() * (log_p_student - log_m)).sum(-1)
    return beta * kl_teacher + (1 - beta) * kl_student


DIVERGENCES = ("forward", "reverse", "jsd")


def token_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, kind: str, temperature: float,
                     beta: float = 0.5, tau_squared: bool = True, mask: torch.Tensor | None = None) -> torch.Tensor:
    """τ²·D(teacher, student) averaged over samples (over the unmasked tokens when `mask` is given),
    D = forward KL(p_T ‖ p_S), reverse KL(p_S ‖ p_T) or the generalised JSD with β."""
    if kind == "forward":
        per_item = kl_per_item(student_logits, teacher_logits, temperature)
    elif kind == "reverse":
        per_item = reverse_kl_per_item(student_logits, teacher_logits, temperature)
    elif kind == "jsd":
        per_item = generalised_jsd_per_item(student_logits, teacher_logits, beta, temperature)
    else:
        raise ValueError(f"divergence {kind!r} is not one of {DIVERGENCES}")
    value = masked_mean(per_item, mask)
    return value * temperature**2 if tau_squared else value


def kd_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KD on raw logits by mean squared error (regression tasks, the annealing family)."""
    return F.mse_loss(student_logits, teacher_logits)


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """mean over samples of −Σ_c σ(z_T)_c · log σ(z_S)_c (temperature 1)."""
    return -(F.softmax(teacher_logits, -1) * F.log_softmax(student_logits, -1)).sum(-1).mean()


def target_cross_entropy(student_logits: torch.Tensor, target: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """−Σ_c target_c · log σ(z_S)_c against a given target distribution, mean over the samples
    whose label is not IGNORE_INDEX (label smoothing, any soft target)."""
    log_p = F.log_softmax(student_logits, dim=-1).reshape(-1, student_logits.size(-1))
    keep = labels.reshape(-1) != IGNORE_INDEX
    per_sample = -(target.reshape(-1, target.size(-1)) * log_p).sum(-1)
    return per_sample[keep].mean()


# ---- middle level ---------------------------------------------------------------------------
def hard_label_loss(student_logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> torch.Tensor:
    """CE(y, σ(z_S)) for classification (token-level labels: IGNORE_INDEX is skipped), MSE on the
    single output for regression."""
    if labels.dim() == 3 and labels.is_floating_point():
        raise KdxError("this method's loss reads class labels, but the task's labels are span start/end targets",
                       "use a method with a span_prediction objective (finetune, kd, self_kd, takd)")
    if regression:
        return F.mse_loss(student_logits.squeeze(-1), labels.float())
    return F.cross_entropy(student_logits.reshape(-1, student_logits.size(-1)), labels.reshape(-1),
                           ignore_index=IGNORE_INDEX)


def span_loss(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of per-token start/end scores against 0/1 targets (span prediction);
    positions labelled IGNORE_INDEX (padding) are skipped."""
    keep = labels != IGNORE_INDEX
    return F.binary_cross_entropy_with_logits(student_logits[keep], labels[keep].float())


def span_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
            tau_squared: bool = True, mask: torch.Tensor | None = None) -> torch.Tensor:
    """KD for span prediction: the head scores every token as a start and as an end independently
    (σ of each logit, trained with BCE), so each (token, start|end) score is a Bernoulli
    distribution; the term is τ²·KL(Bern(σ(z_T/τ)) ‖ Bern(σ(z_S/τ))), averaged over both scores of
    every real token (`mask` (B, T)). A Bernoulli is a softmax over the logits (0, z)."""
    def as_two_classes(logits):
        return torch.stack([torch.zeros_like(logits), logits], dim=-1)

    kl = kl_per_item(as_two_classes(student_logits), as_two_classes(teacher_logits), temperature)
    kl = masked_mean(kl, None if mask is None else mask.unsqueeze(-1).expand_as(kl))
    return kl * temperature**2 if tau_squared else kl


def task_loss(family: str, student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The task's own supervised loss for its family (kdx.tasks.families)."""
    if family == "span_prediction":
        return span_loss(student_logits, labels)
    return hard_label_loss(student_logits, labels, regression=family == "regression")


def distillation_term(student_logits: torch.Tensor, teacher_logits: torch.Tensor, regression: bool,
                      temperature: float, tau_squared: bool = True, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The KD term: τ²·KL of softened distributions, or MSE between outputs for regression."""
    if regression:
        return kd_mse(student_logits, teacher_logits)
    return kd_kl(student_logits, teacher_logits, temperature, tau_squared, mask)


def kd_objective(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                 regression: bool, alpha: float, temperature: float, tau_squared: bool = True,
                 mask: torch.Tensor | None = None, family: str | None = None) -> dict[str, torch.Tensor]:
    """Vanilla KD, L = (1−α)·CE(y, σ(z_S)) + α·τ²·KL(σ(z_T/τ) ‖ σ(z_S/τ)), as loss terms
    {loss, ce, kd} (regression: MSE to the labels and to the teacher; span prediction: BCE to the
    start/end targets and `span_kd` to the teacher's per-token start/end probabilities)."""
    if family == "span_prediction":
        ce = span_loss(student_logits, labels)
        kd = span_kd(student_logits, teacher_logits, temperature, tau_squared, mask)
        return {"loss": (1 - alpha) * ce + alpha * kd, "ce": ce, "kd": kd}
    ce = hard_label_loss(student_logits, labels, regression)
    kd = distillation_term(student_logits, teacher_logits, regression, temperature, tau_squared, mask)
    return {"loss": (1 - alpha) * ce + alpha * kd, "ce": ce, "kd": kd}


def annealed_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor, phi: float) -> torch.Tensor:
    """Annealing-KD's phase-1 loss MSE(z_S, Φ·z_T): the teacher's logits scaled by Φ ∈ (0, 1]."""
    return kd_mse(student_logits, phi * teacher_logits)
