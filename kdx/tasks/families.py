"""Task families and their batch contracts, in one place.

A task's DataModule yields batches (dicts of tensors); `TaskSpec.family` says which contract its
batches follow, and the loss layer (`kdx.losses.task_loss`) and the metrics read them by it.
Every batch also carries `idx` (B,): each example's stable integer id within its split, which the
teacher-output cache and the auxiliary-sample methods key on. Everything in a batch that is not
in `NOT_MODEL_INPUTS` is passed to the model's forward.

| family              | model inputs                                   | labels                                   | logits     |
|---------------------|------------------------------------------------|------------------------------------------|------------|
| classification      | input_ids, attention_mask[, token_type_ids]    | (B,) long class ids                      | (B, C)     |
|                     | or pixel_values / x (image, vector tasks)      |                                          |            |
| regression          | as classification                              | (B,) float targets                       | (B, 1)     |
| language_modeling   | input_ids, attention_mask (B, T)               | (B, T) long: the token position t must   | (B, T, V)  |
|                     |                                                | predict (already shifted), −100 = none   |            |
| generation          | input_ids = prompt + answer, attention_mask    | (B, T) as language_modeling, −100 on the | (B, T, V)  |
|                     | (teacher forcing)                              | prompt: only the answer is learned       |            |
| span_prediction     | input_ids, attention_mask[, token_type_ids]    | (B, T, 2) float 0/1 start/end targets of | (B, T, 2)  |
|                     | (the query is marked in the input)             | every answer span, −100 on padding       |            |
| question_answering  | input_ids, attention_mask[, token_type_ids]    | (B, 2) long: the answer's start and end  | (B, 2, T)  |
|                     | (question + one context window)                | token; 0 (the first token) = no answer   |            |

Token-level families (language_modeling, generation, span_prediction) mask their losses with the
labels (−100) and their distillation terms with the attention mask. Question answering is
sequence-level to the losses: its logits put the positions on the last dim (start and end rows),
so CE is softmax cross-entropy over positions and KD compares the start/end distributions; the
model output gives padded positions a score of −1e4 (kdx.models.outputs.span_logits).
"""

from dataclasses import dataclass

FAMILIES = ("classification", "regression", "language_modeling", "generation", "span_prediction",
            "question_answering")
TOKEN_LEVEL = ("language_modeling", "generation", "span_prediction")
# Batch entries that are targets or bookkeeping, not model inputs.
NOT_MODEL_INPUTS = ("labels", "idx")


@dataclass(frozen=True)
class BatchContract:
    family: str
    label_dims: int              # 1: (B,), 2: (B, T) or (B, 2), 3: (B, T, 2)
    label_dtype: str             # "long" | "float"


CONTRACTS = {
    "classification": BatchContract("classification", 1, "long"),
    "regression": BatchContract("regression", 1, "float"),
    "language_modeling": BatchContract("language_modeling", 2, "long"),
    "generation": BatchContract("generation", 2, "long"),
    "span_prediction": BatchContract("span_prediction", 3, "float"),
    "question_answering": BatchContract("question_answering", 2, "long"),
}


def check_batch(family: str, batch: dict) -> None:
    """Raises ValueError when `batch` breaks its family's contract (for task authors and tests)."""
    contract = CONTRACTS[family]
    missing = [k for k in ("labels", "idx") if k not in batch]
    if missing:
        raise ValueError(f"a {family} batch needs {missing}")
    labels = batch["labels"]
    if labels.dim() != contract.label_dims:
        raise ValueError(f"{family} labels must have {contract.label_dims} dims, got shape {tuple(labels.shape)}")
    if (labels.is_floating_point()) != (contract.label_dtype == "float"):
        raise ValueError(f"{family} labels must be {contract.label_dtype}, got {labels.dtype}")
    if labels.shape[0] != batch["idx"].shape[0]:
        raise ValueError("labels and idx disagree on the batch size")
