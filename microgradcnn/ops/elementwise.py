"""Elementwise ops: add sub mul div neg pow rpow exp log relu tanh sigmoid (NumPy broadcasting)."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from microgradcnn.tensor import Array, Context, Function, Tensor, lift


def _pair(a: Any, b: Any) -> tuple[Tensor, Tensor]:
    """Both operands as tensors; a Python number takes the other operand's dtype (never upcasts)."""
    if isinstance(a, Tensor):
        return a, lift(b, a)
    if isinstance(b, Tensor):
        return lift(a, b), b
    return Tensor(a), Tensor(b)


class AddFn(Function):
    """a + b. Backward: grad to both (the engine sums away broadcast axes)."""

    name = "add"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, a: Array, b: Array) -> Array:
        return a + b

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array, Array]:
        return grad, grad


def add(a: Any, b: Any) -> Tensor:
    """Elementwise a + b with NumPy broadcasting. Shapes: broadcast(a, b)."""
    return AddFn.apply(*_pair(a, b))


class SubFn(Function):
    """a - b. Backward: grad, -grad."""

    name = "sub"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, a: Array, b: Array) -> Array:
        return a - b

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array, Array]:
        return grad, (-grad if ctx.needs_input_grad[1] else None)


def sub(a: Any, b: Any) -> Tensor:
    """Elementwise a - b with NumPy broadcasting."""
    return SubFn.apply(*_pair(a, b))


class MulFn(Function):
    """a * b. Backward: grad * b, grad * a."""

    name = "mul"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, a: Array, b: Array) -> Array:
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array, Array]:
        a, b = ctx.saved_tensors
        da, db = ctx.needs_input_grad
        return (grad * b if da else None), (grad * a if db else None)


def mul(a: Any, b: Any) -> Tensor:
    """Elementwise a * b with NumPy broadcasting."""
    return MulFn.apply(*_pair(a, b))


class DivFn(Function):
    """a / b. Backward: grad / b, -grad * (a / b) / b."""

    name = "div"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, a: Array, b: Array) -> Array:
        out = a / b
        ctx.save_for_backward(b, out)
        return out

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array, Array]:
        b, out = ctx.saved_tensors
        da = grad / b
        return da, (-da * out if ctx.needs_input_grad[1] else None)


def div(a: Any, b: Any) -> Tensor:
    """Elementwise a / b with NumPy broadcasting."""
    return DivFn.apply(*_pair(a, b))


class NegFn(Function):
    """-x. Backward: -grad."""

    name = "neg"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, x: Array) -> Array:
        return -x

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array]:
        return (-grad,)


def neg(x: Tensor) -> Tensor:
    """Elementwise -x."""
    return NegFn.apply(x)


class PowFn(Function):
    """x ** p for a constant exponent p. Backward: grad * p * x ** (p - 1), and 0 for p = 0.

    x ** 0 is the constant 1, so its gradient is 0 everywhere; the general rule would compute
    0 * 0 ** -1 = 0 * inf = NaN at x = 0 (PyTorch special-cases it the same way).
    """

    name = "pow"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, x: Array, exponent: float) -> Array:
        ctx.save_for_backward(x)
        return x**exponent

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array]:
        (x,) = ctx.saved_tensors
        p = ctx.attrs["exponent"]
        if p == 0:
            return (grad * 0,)  # never 0 * x ** -1, which is 0 * inf = NaN at x = 0
        return (grad * (p * x ** (p - 1)),)


class RpowFn(Function):
    """b ** x for a constant positive base b. Backward: grad * b ** x * ln b."""

    name = "rpow"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, x: Array, base: float) -> Array:
        out = np.power(x.dtype.type(base), x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array]:
        (out,) = ctx.saved_tensors
        return (grad * out * np.log(out.dtype.type(ctx.attrs["base"])),)


def pow(x: Any, exponent: Any) -> Tensor:
    """Elementwise x ** exponent.

    Either side may be a Python number: ``x ** 2`` (op ``pow``) or ``2 ** x`` (op ``rpow``, base > 0).
    Tensor ** Tensor is composed as exp(exponent * log(x)), so it needs x > 0.

    Raises:
        ValueError: for a scalar base that is not positive (its log, and so the gradient, is undefined).
    """
    if isinstance(x, Tensor) and isinstance(exponent, numbers.Real):
        return PowFn.apply(x, exponent=float(exponent))
    if isinstance(exponent, Tensor) and isinstance(x, numbers.Real):
        if x <= 0:
            raise ValueError(f"rpow: the base of base ** tensor must be positive, got {x}")
        return RpowFn.apply(exponent, base=float(x))
    x, exponent = _pair(x, exponent)
    return exp(mul(exponent, log(x)))


class ExpFn(Function):
    """e ** x. Backward: grad * e ** x (the saved output)."""

    name = "exp"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, x: Array) -> Array:
        out = np.exp(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array]:
        (out,) = ctx.saved_tensors
        return (grad * out,)


def exp(x: Tensor) -> Tensor:
    """Elementwise e ** x."""
    return ExpFn.apply(x)


class LogFn(Function):
    """ln x. Backward: grad / x."""

    name = "log"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, x: Array) -> Array:
        ctx.save_for_backward(x)
        return np.log(x)

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array]:
        (x,) = ctx.saved_tensors
        return (grad / x,)


def log(x: Tensor) -> Tensor:
    """Elementwise natural logarithm (NaN below 0 and -inf at 0, as NumPy)."""
    return LogFn.apply(x)


class ReluFn(Function):
    """max(x, 0). Backward: grad where x > 0, else 0 (PyTorch's choice at 0)."""

    name = "relu"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, x: Array) -> Array:
        out = np.maximum(x, 0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array]:
        (out,) = ctx.saved_tensors
        return (grad * (out > 0),)  # a bool mask multiply is ~3x faster than np.where here


def relu(x: Tensor) -> Tensor:
    """Elementwise max(x, 0)."""
    return ReluFn.apply(x)


class TanhFn(Function):
    """tanh x. Backward: grad * (1 - tanh(x)**2)."""

    name = "tanh"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, x: Array) -> Array:
        out = np.tanh(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array]:
        (out,) = ctx.saved_tensors
        return (grad * (1 - out * out),)


def tanh(x: Tensor) -> Tensor:
    """Elementwise hyperbolic tangent."""
    return TanhFn.apply(x)


class SigmoidFn(Function):
    """s = 1 / (1 + e**-x). Backward: grad * s * (1 - s)."""

    name = "sigmoid"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, x: Array) -> Array:
        # e**-|x| never overflows; the two branches are the same function rearranged for either sign.
        z = np.exp(-np.abs(x))
        out = np.where(x >= 0, 1 / (1 + z), z / (1 + z))
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array]:
        (out,) = ctx.saved_tensors
        return (grad * out * (1 - out),)


def sigmoid(x: Tensor) -> Tensor:
    """Elementwise logistic function, without overflow for large |x|."""
    return SigmoidFn.apply(x)
