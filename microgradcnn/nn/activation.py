"""Activation layers: LeakyReLU GELU ELU Softplus Tanh Sigmoid (ReLU lives with the other layers)."""

from __future__ import annotations

from microgradcnn import ops
from microgradcnn.nn.module import Module
from microgradcnn.ops.activation import _number
from microgradcnn.tensor import Tensor


class LeakyReLU(Module):
    """x for x > 0, ``negative_slope * x`` otherwise, as ``torch.nn.LeakyReLU``. Shapes: any -> the same."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = _number(negative_slope, "negative_slope", "LeakyReLU")

    def forward(self, x: Tensor) -> Tensor:
        """Shapes: any -> the same."""
        return ops.leaky_relu(x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class GELU(Module):
    """x * Phi(x) (exact, erf form; ``approximate="tanh"`` for PyTorch's approximation), as
    ``torch.nn.GELU``. Shapes: any -> the same."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        """Shapes: any -> the same."""
        return ops.gelu(x, self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class ELU(Module):
    """x for x > 0, ``alpha * (e^x - 1)`` otherwise, as ``torch.nn.ELU``. Shapes: any -> the same."""

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = _number(alpha, "alpha", "ELU")

    def forward(self, x: Tensor) -> Tensor:
        """Shapes: any -> the same."""
        return ops.elu(x, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class Softplus(Module):
    """``log(1 + e^(beta x)) / beta``, linear where ``beta * x > threshold``, as ``torch.nn.Softplus``.
    Shapes: any -> the same."""

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        super().__init__()
        self.beta = _number(beta, "beta", "Softplus")
        if self.beta <= 0:
            raise ValueError(f"Softplus: beta must be positive, got {beta!r}")
        self.threshold = _number(threshold, "threshold", "Softplus")

    def forward(self, x: Tensor) -> Tensor:
        """Shapes: any -> the same."""
        return ops.softplus(x, self.beta, self.threshold)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"


class Tanh(Module):
    """Hyperbolic tangent, as ``torch.nn.Tanh``. Shapes: any -> the same."""

    def forward(self, x: Tensor) -> Tensor:
        """Shapes: any -> the same."""
        return ops.tanh(x)


class Sigmoid(Module):
    """1 / (1 + e^-x), without overflow, as ``torch.nn.Sigmoid``. Shapes: any -> the same."""

    def forward(self, x: Tensor) -> Tensor:
        """Shapes: any -> the same."""
        return ops.sigmoid(x)
