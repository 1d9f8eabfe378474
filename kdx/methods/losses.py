"""Loss functions shared by the methods (METHODS.md §0). Softmax is always over the last dim, so
token-level logits (B, T, V) work like sequence-level ones (B, C)."""

import torch
import torch.nn.functional as F


def hard_label_loss(student_logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> torch.Tensor:
    """CE(y, softmax(z_S)) for classification, MSE on the single output for regression."""
    if regression:
        return F.mse_loss(student_logits.squeeze(-1), labels.float())
    return F.cross_entropy(student_logits.reshape(-1, student_logits.size(-1)), labels.reshape(-1))


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
          tau_squared: bool = True, mask: torch.Tensor | None = None) -> torch.Tensor:
    """tau²·KL(softmax(z_T/tau) ‖ softmax(z_S/tau)), mean over samples (over unmasked tokens when
    `mask` (B, T) is given)."""
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    per_item = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)
    if mask is not None:
        kl = (per_item * mask).sum() / mask.sum().clamp_min(1)
    else:
        kl = per_item.reshape(-1).mean() if per_item.dim() > 1 else per_item.mean()
    return kl * temperature**2 if tau_squared else kl


def kd_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KD on logits by mean squared error (regression tasks, Annealing-KD)."""
    return F.mse_loss(student_logits, teacher_logits)
