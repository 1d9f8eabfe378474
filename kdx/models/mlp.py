"""A plain multilayer perceptron for vector inputs (the Continuation-KD sinusoid toy)."""

import torch
import torch.nn as nn

from kdx.errors import KdxError

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


class MLP(nn.Module):
    """Takes `x` (B, input_dim), returns (B, num_labels): linear → activation per hidden layer."""

    def __init__(self, input_dim: int, hidden_sizes: list[int], num_labels: int, activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise KdxError(f"MLP activation {activation!r} is not one of {sorted(ACTIVATIONS)}",
                           f"set model.teacher.activation / model.student.activation to one of {sorted(ACTIVATIONS)}")
        layers, width = [], input_dim
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), ACTIVATIONS[activation]()]
            width = size
        layers.append(nn.Linear(width, num_labels))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor | None = None, **other) -> torch.Tensor:
        if x is None:
            raise KdxError(f"the MLP needs vector inputs (`x`), but the batch has {sorted(other)}",
                           "use it with a vector task such as task=synthetic/sinusoid")
        return self.net(x)


def mlp(hidden_sizes: list[int], num_labels: int, vocab_size: int | None = None, input_dim: int = 1,
        activation: str = "relu") -> MLP:
    """Builder for model specs (`_target_: kdx.models.mlp.mlp`); `vocab_size` is unused."""
    return MLP(input_dim, list(hidden_sizes), num_labels, activation)
