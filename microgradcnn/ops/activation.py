"""Activation ops beyond relu/tanh/sigmoid: erf gelu leaky_relu elu softplus, with a vectorized erf.

NumPy has no ``erf`` (and SciPy is not a dependency), so this module computes it: a series for |x| < 2.5
and a continued fraction for the tail, both evaluated for a whole array at once (loops run over terms,
never over elements); see ``erf_array``. Every backward here is written with operators and ``Fn.call`` of
other ops on the saved input or output, so the same rule differentiates again under ``create_graph``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from microgradcnn._checks import is_real
from microgradcnn.ops.elementwise import ExpFn, SigmoidFn
from microgradcnn.tensor import Array, Context, Function, Tensor

_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)
_SQRT1_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

# Where the series hands over to the continued fraction, and how many terms each takes. Measured against
# math.erf / math.erfc on 20,000 points each side of the split (tests/ops/test_activation.py repeats it):
# 40 series terms reach 1.3e-15 absolute on [0, 2.5]; 30 continued-fraction levels reach 2e-14 relative
# on erfc (so 1e-16 absolute on erf) from 2.5 upwards, where erfc <= 4e-4.
_SPLIT = 2.5
_SERIES_TERMS = 40
_FRACTION_DEPTH = 30


def _erf_series(a: Array) -> Array:
    """erf(a) for 0 <= a < 2.5: (2/sqrt(pi)) e^(-a^2) sum_n 2^n a^(2n+1) / (1*3*...*(2n+1)).

    Abramowitz & Stegun 7.1.6. Every term is positive, so nothing cancels: the sum's rounding error stays
    a few ulps where the alternating Maclaurin series would lose digits to terms of size e^(a^2).
    """
    a2 = a * a
    term = a.copy()
    total = a.copy()
    for n in range(_SERIES_TERMS):
        term *= a2 * (2.0 / (2 * n + 3))
        total += term
    return (_TWO_OVER_SQRT_PI * np.exp(-a2)) * total


def _erfc_fraction(a: Array) -> Array:
    """erfc(a) for a >= 2.5, accurate relative to erfc itself (no 1 - erf cancellation).

    Laplace's continued fraction erfc(a) = e^(-a^2)/sqrt(pi) / (a + (1/2)/(a + 1/(a + (3/2)/(a + ...)))),
    evaluated from a fixed depth upwards.
    """
    f = a.copy()
    for k in range(_FRACTION_DEPTH, 0, -1):
        f = a + (k / 2.0) / f
    with np.errstate(over="ignore"):  # a*a overflows to inf for |a| > 1e154: e^-inf is then 0, as it should
        return (_INV_SQRT_PI * np.exp(-a * a)) / f


def _erf_parts(x: Array) -> tuple[Array, Array, Array]:
    """(|x|, mask of |x| < split, erf(|x|) on the mask and erfc(|x|) off it), in x's float dtype."""
    a = np.abs(x)
    small = a < _SPLIT
    part = np.empty_like(a)
    part[small] = _erf_series(a[small])
    part[~small] = _erfc_fraction(a[~small])  # NaN is not < split, so it lands here and stays NaN
    return a, small, part


def erf_array(x: Array) -> Array:
    """The error function of a float array, elementwise, to about 1e-15 (NumPy has none).

    Shapes: any -> the same, in x's dtype (ints become float64). erf(+-inf) = +-1, NaN stays NaN.
    """
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    _, small, part = _erf_parts(x)
    out = np.where(small, part, 1.0 - part)
    return np.copysign(out, x).astype(x.dtype, copy=False)


def erfc_array(x: Array) -> Array:
    """1 - erf(x), elementwise, accurate relative to itself in the tail (erfc(10) ~ 2e-45, not 0).

    Shapes: any -> the same, in x's dtype (ints become float64).
    """
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    _, small, part = _erf_parts(x)
    # erf(|x|) = part on the small side, 1 - part on the tail; erfc(x) = 1 - sign(x) erf(|x|).
    erf_abs = np.where(small, part, 1.0 - part)
    erfc_abs = np.where(small, 1.0 - part, part)
    return np.where(x >= 0, erfc_abs, 1.0 + erf_abs).astype(x.dtype, copy=False)


def _constant_where(mask: Array, a: float, b: float, like: Any) -> Array:
    """``np.where(mask, a, b)`` in ``like``'s dtype (an array or a Tensor): a constant factor that does not
    upcast a float32 gradient."""
    dtype = like.dtype
    return np.where(mask, dtype.type(a), dtype.type(b))


class ErfFn(Function):
    """erf x. Backward: grad * (2/sqrt(pi)) e^(-x^2)."""

    name = "erf"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, x: Array) -> Array:
        ctx.save_for_backward(x)
        return erf_array(x)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any]:
        (x,) = ctx.saved_tensors
        return (grad * (ExpFn.call(-(x * x)) * _TWO_OVER_SQRT_PI),)


def erf(x: Tensor) -> Tensor:
    """Elementwise error function 2/sqrt(pi) * integral_0^x e^(-t^2) dt, as ``torch.erf``."""
    return ErfFn.apply(x)


class GeluFn(Function):
    """x * Phi(x), Phi the standard normal CDF. Backward: grad * (Phi(x) + x * phi(x)), phi its density."""

    name = "gelu"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, x: Array) -> Array:
        ctx.save_for_backward(x)
        # Phi(x) = erfc(-x / sqrt 2) / 2: the erfc form keeps gelu's relative accuracy for very negative x,
        # where 1 + erf(x / sqrt 2) would cancel to 0.
        return x * (0.5 * erfc_array(x * -_SQRT1_2))

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any]:
        (x,) = ctx.saved_tensors
        cdf = ErfFn.call(x * _SQRT1_2) * 0.5 + 0.5
        pdf = ExpFn.call(x * x * -0.5) * _INV_SQRT_2PI
        return (grad * (cdf + x * pdf),)


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    """Gaussian error linear unit x * Phi(x), as ``torch.nn.functional.gelu``. Shapes: any -> the same.

    ``approximate="none"`` (the default) is the exact erf form, one op; ``"tanh"`` is PyTorch's
    approximation 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), composed of elementwise ops.

    Raises:
        ValueError: for another ``approximate``.
    """
    if approximate == "none":
        return GeluFn.apply(x)
    if approximate == "tanh":
        inner = (x + x * x * x * 0.044715) * math.sqrt(2.0 / math.pi)
        return x * 0.5 * (inner.tanh() + 1.0)
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


class LeakyReluFn(Function):
    """x where x > 0, else negative_slope * x. Backward: grad times 1 or negative_slope (slope at 0)."""

    name = "leaky_relu"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, x: Array, negative_slope: float) -> Array:
        ctx.save_for_backward(x)
        return np.where(x > 0, x, x * negative_slope)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any]:
        (x,) = ctx.saved_tensors
        return (grad * _constant_where(x > 0, 1.0, ctx.attrs["negative_slope"], grad),)


def _number(value: Any, what: str, op: str) -> float:
    if not is_real(value) or not math.isfinite(value):
        raise ValueError(f"{op}: {what} must be a finite real number, got {value!r}")
    return float(value)


def leaky_relu(x: Tensor, negative_slope: float = 0.01) -> Tensor:
    """Elementwise x for x > 0, ``negative_slope * x`` otherwise, as ``torch.nn.functional.leaky_relu``.

    Raises:
        ValueError: for a ``negative_slope`` that is not a finite number.
    """
    return LeakyReluFn.apply(x, negative_slope=_number(negative_slope, "negative_slope", "leaky_relu"))


class EluFn(Function):
    """x where x > 0, else alpha * (e^x - 1). Backward: grad where x > 0, else grad * (out + alpha).

    out + alpha = alpha * e^x on the negative side, as PyTorch's rule; written with the saved output so it
    never evaluates e^x for large positive x.
    """

    name = "elu"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, x: Array, alpha: float) -> Array:
        out = np.where(x > 0, x, np.expm1(np.minimum(x, 0)) * alpha)
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any]:
        x, out = ctx.saved_tensors
        positive = x > 0
        negative = _constant_where(positive, 0.0, 1.0, grad)
        return (grad * (positive + negative * (out + ctx.attrs["alpha"])),)


def elu(x: Tensor, alpha: float = 1.0) -> Tensor:
    """Elementwise x for x > 0, ``alpha * (e^x - 1)`` otherwise, as ``torch.nn.functional.elu``.

    Raises:
        ValueError: for an ``alpha`` that is not a finite number.
    """
    return EluFn.apply(x, alpha=_number(alpha, "alpha", "elu"))


class SoftplusFn(Function):
    """log(1 + e^(beta x)) / beta, and x itself where beta * x > threshold (PyTorch's switch).

    Backward: grad * sigmoid(beta x), and grad where beta * x > threshold.
    """

    name = "softplus"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, x: Array, beta: float, threshold: float) -> Array:
        ctx.save_for_backward(x)
        z = x * beta
        # log(1 + e^z) = max(z, 0) + log1p(e^-|z|): never overflows, keeps precision for very negative z.
        soft = (np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))) / beta
        return np.where(z > threshold, x, soft)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any]:
        (x,) = ctx.saved_tensors
        beta, threshold = ctx.attrs["beta"], ctx.attrs["threshold"]
        linear = (x * beta) > threshold
        smooth = _constant_where(linear, 0.0, 1.0, grad)
        return (grad * (linear + smooth * SigmoidFn.call(x * beta)),)


def softplus(x: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """Elementwise ``log(1 + e^(beta x)) / beta``, linear above ``threshold``, as
    ``torch.nn.functional.softplus``. Shapes: any -> the same.

    Raises:
        ValueError: for a ``beta`` that is not a positive finite number, or a non-finite ``threshold``.
    """
    beta = _number(beta, "beta", "softplus")
    if beta <= 0:
        raise ValueError(f"softplus: beta must be positive, got {beta!r}")
    return SoftplusFn.apply(x, beta=beta, threshold=_number(threshold, "threshold", "softplus"))
