"""Feature KD (FitNets, Romero et al. 2015; TinyBERT, Jiao et al. 2020; MiniLM, Wang et al. 2020),
docs/methods.md §10: vanilla KD plus matching the inside of mapped layers.

    L        = (1−α)·CE(y, σ(z_S)) + α·τ²·KL(σ(z_T/τ) ‖ σ(z_S/τ)) + β_h·L_hidden + β_a·L_attn
    L_hidden = mean over pairs (i→j) of MSE(W_i·h_S^(i), h_T^(j)),   mean over real tokens and features
    L_attn   = mean over pairs (i→j) of KL(A_T^(j) ‖ A_S^(i)),       mean over heads and real query tokens

h^(i) is the output of transformer layer i (0-based), A^(i) its attention distribution. W_i is a
learned linear map from the student's width to the teacher's (the identity when they match); it
trains with the student. When head counts differ, the head-averaged distributions are compared.
The layer map is `uniform` (student layer i ↔ teacher layer (i+1)·N_T/N_S − 1: a 3-layer student
of a 6-layer teacher maps {0: 1, 1: 3, 2: 5}) or an explicit {student: teacher} dict. Teacher and
student must share the tokenizer (positions are compared one to one).
"""

import torch
import torch.nn as nn

from kdx.errors import KdxError
from kdx.knobs import NonNegative, Positive, Weight
from kdx.losses import kd_objective, masked_mean
from kdx.methods.base import Method, SetupContext, TrainStep
from kdx.models.outputs import ModelOutputs, OutputRequest


def uniform_layer_map(student_layers: int, teacher_layers: int) -> dict[int, int]:
    """Student layer i ↔ teacher layer (i+1)·N_T/N_S − 1 (each student layer takes the last of its
    equal share of teacher layers)."""
    return {i: (i + 1) * teacher_layers // student_layers - 1 for i in range(student_layers)}


def resolve_layer_map(layer_map, student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """The (student layer, teacher layer) pairs, checked against both depths."""
    if layer_map == "uniform":
        if student_layers > teacher_layers:
            raise KdxError(f"method.layer_map=uniform needs a student no deeper than the teacher "
                           f"({student_layers} > {teacher_layers} layers)", "give an explicit method.layer_map")
        return sorted(uniform_layer_map(student_layers, teacher_layers).items())
    if not hasattr(layer_map, "items") or not layer_map:
        raise KdxError(f"method.layer_map={layer_map!r} is neither 'uniform' nor a {{student: teacher}} dict",
                       "e.g. method.layer_map=uniform or 'method.layer_map={0:1,1:3,2:5}'")
    pairs = sorted((int(s), int(t)) for s, t in layer_map.items())   # keys may come back as strings
    for s, t in pairs:
        if not (0 <= s < student_layers and 0 <= t < teacher_layers):
            raise KdxError(f"method.layer_map pair {s}: {t} is out of range: the student has {student_layers} "
                           f"layers and the teacher {teacher_layers} (0-based)",
                           "map existing layers, or use method.layer_map=uniform")
    return pairs


def hidden_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """MSE between (projected) student and teacher hidden states, mean over features and real tokens."""
    return masked_mean((student - teacher).pow(2).mean(-1), mask)


def attention_kl(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """KL(A_T ‖ A_S) per head and query row, mean over heads and real query tokens. Rows are
    distributions over keys (B, heads, T, T); padded keys carry zero probability in both."""
    if student.size(1) != teacher.size(1):
        student, teacher = student.mean(1, keepdim=True), teacher.mean(1, keepdim=True)
    per_row = (torch.xlogy(teacher, teacher) - teacher * student.clamp_min(1e-12).log()).sum(-1)   # (B, H, T)
    query_mask = None if mask is None else mask.unsqueeze(1).expand_as(per_row)
    return masked_mean(per_row, query_mask)


class FeatureKD(Method):
    learns_from = "teacher"
    handles_span_targets = True

    def __init__(self, name: str = "feature_kd", alpha: Weight = 0.5, temperature: Positive = 2.0,
                 tau_squared: bool = True, hidden_weight: NonNegative = 1.0, attention_weight: NonNegative = 1.0,
                 layer_map="uniform"):
        super().__init__()
        if hidden_weight < 0 or attention_weight < 0:
            raise KdxError(f"method.hidden_weight={hidden_weight}, attention_weight={attention_weight} must be >= 0",
                           "0 switches a term off")
        self.name = name
        self.alpha, self.temperature, self.tau_squared = alpha, temperature, tau_squared
        self.hidden_weight, self.attention_weight = hidden_weight, attention_weight
        self.layer_map = layer_map
        self.outputs = OutputRequest(hidden_states=hidden_weight > 0, attentions=attention_weight > 0)
        self.pairs: list[tuple[int, int]] = []
        self.projections = nn.ModuleList()

    def setup(self, context: SetupContext) -> None:
        student, teacher = context.student.config, context.teacher.config
        self.pairs = resolve_layer_map(self.layer_map, student.num_hidden_layers, teacher.num_hidden_layers)
        if self.hidden_weight > 0:
            width_s, width_t = student.hidden_size, teacher.hidden_size
            self.projections = nn.ModuleList(
                nn.Linear(width_s, width_t) if width_s != width_t else nn.Identity() for _ in self.pairs)

    def student_side_parameters(self) -> list[nn.Parameter]:
        return list(self.projections.parameters())

    def feature_terms(self, student: ModelOutputs, teacher: ModelOutputs) -> dict[str, torch.Tensor]:
        if student.logits.shape[:1] != teacher.logits.shape[:1] or (
                student.mask is not None and teacher.mask is not None and student.mask.shape != teacher.mask.shape):
            raise KdxError("feature_kd compares token positions, but teacher and student saw different inputs",
                           "use a pair that shares one tokenizer")
        terms = {}
        if self.hidden_weight > 0:
            terms["hidden_mse"] = torch.stack([
                hidden_mse(project(student.layer_output(i)), teacher.layer_output(j), student.mask)
                for (i, j), project in zip(self.pairs, self.projections)]).mean()
        if self.attention_weight > 0:
            terms["attention_kl"] = torch.stack([
                attention_kl(student.attentions[i], teacher.attentions[j], student.mask)
                for i, j in self.pairs]).mean()
        return terms

    def losses(self, step: TrainStep):
        student, teacher = step.student(), step.teacher()
        terms = kd_objective(student.logits, teacher.logits, step.labels, step.regression,
                             self.alpha, self.temperature, self.tau_squared, mask=step.token_mask,
                             family=step.family)
        features = self.feature_terms(student, teacher)
        total = terms["loss"]
        if "hidden_mse" in features:
            total = total + self.hidden_weight * features["hidden_mse"]
        if "attention_kl" in features:
            total = total + self.attention_weight * features["attention_kl"]
        return {**terms, **features, "loss": total}
