"""Batch normalisation: the ``batch_norm`` op (batch statistics, one fused op) and ``F.batch_norm``.

Training mode normalises with the batch's own mean and variance, which depend on every sample, so the
op's backward has the classic three-term form; it is one registry op rather than a chain of mean/sub/mul
ops because that keeps one forward and one backward pass over the activations instead of eight. Evaluation
mode uses running statistics, which are constants: an affine map composed of ``mul`` and ``add``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from microgradcnn._checks import is_real
from microgradcnn.tensor import Array, Context, Function, Tensor


def _channel_shape(ndim: int) -> tuple[int, ...]:
    """(1, -1, 1, ...): a per-channel (C,) array reshaped to broadcast against (N, C, *spatial)."""
    return (1, -1) + (1,) * (ndim - 2)


def _normalize(x: Any, axes: tuple[int, ...], eps: float) -> tuple[Any, Any]:
    """((x - mean) / sqrt(var + eps), 1 / sqrt(var + eps)) over ``axes`` (biased variance).

    Written with methods and operators that arrays and Tensors share, so the backward can recompute it from
    the input Tensor when it is being recorded.
    """
    centered = x - x.mean(axis=axes, keepdims=True)
    inv_std = ((centered * centered).mean(axis=axes, keepdims=True) + eps) ** -0.5
    return centered * inv_std, inv_std


class BatchNormFn(Function):
    """(x - mean) / sqrt(var + eps) * weight + bias, mean and biased var per channel (axis 1) of the batch.

    Inputs: x (N, C, *spatial), and optionally weight and bias, both (C,). Backward, with g = grad * weight
    and xhat the normalised input, averages m(.) over the batch and spatial axes:
    dx = (g - m(g) - xhat * m(g * xhat)) / sqrt(var + eps), dweight = sum(grad * xhat), dbias = sum(grad).
    """

    name = "batch_norm"
    differentiable_backward = True

    @staticmethod
    def forward(
        ctx: Context, x: Array, weight: Array | None = None, bias: Array | None = None, eps: float = 1e-5
    ) -> Array:
        axes = (0, *range(2, x.ndim))
        xhat, inv_std = _normalize(x, axes, eps)
        ctx.save_for_backward(x, weight, xhat, inv_std)
        if weight is None:
            return xhat
        shape = _channel_shape(x.ndim)
        return xhat * weight.reshape(shape) + bias.reshape(shape)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any, ...]:
        x, weight, xhat, inv_std = ctx.saved_tensors
        axes = (0, *range(2, x.ndim))
        if not isinstance(grad, np.ndarray):
            # Recorded backward (create_graph): xhat and 1/std depend on x, so they are recomputed from the
            # input Tensor (the saved arrays would be constants and drop a second-derivative term).
            xhat, inv_std = _normalize(x, axes, ctx.attrs["eps"])
        needs = ctx.needs_input_grad
        dx = None
        if needs[0]:
            g = grad if weight is None else grad * weight.reshape(_channel_shape(x.ndim))
            dx = inv_std * (
                g - g.mean(axis=axes, keepdims=True) - xhat * (g * xhat).mean(axis=axes, keepdims=True)
            )
        if weight is None:
            return (dx,)
        dweight = (grad * xhat).sum(axis=axes) if needs[1] else None
        return dx, dweight, (grad.sum(axis=axes) if needs[2] else None)


def _float(value: Any, what: str, where: str, low: float, high: float = math.inf) -> float:
    if not is_real(value) or not low <= value <= high:
        bounds = f"in [{low}, {high}]" if math.isfinite(high) else f">= {low}"
        raise ValueError(f"{where}: {what} must be a number {bounds}, got {value!r}")
    return float(value)


def _stat(array: Any, name: str, channels: int, shape: tuple[int, ...], where: str) -> Array | None:
    """A running statistic as an ndarray of ``channels`` values (None stays None)."""
    if array is None:
        return None
    array = array.data if isinstance(array, Tensor) else array
    if not isinstance(array, np.ndarray) or array.shape != (channels,):
        got = getattr(array, "shape", type(array).__name__)
        raise ValueError(
            f"{where}: {name} must be an array of shape ({channels},) for input {shape}, got {got}"
        )
    return array


def _affine_param(t: Any, name: str, channels: int, shape: tuple[int, ...], where: str) -> Tensor | None:
    if t is None:
        return None
    t = t if isinstance(t, Tensor) else Tensor(t)
    if t.shape != (channels,):
        raise ValueError(f"{where}: {name} must have shape ({channels},) for input {shape}, got {t.shape}")
    return t


def _batch_norm(
    x: Tensor,
    running_mean: Array | None,
    running_var: Array | None,
    weight: Tensor | None,
    bias: Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
    where: str,
) -> Tensor:
    """``batch_norm`` with ``where`` naming the caller (a layer) in error messages; see ``batch_norm``."""
    if not isinstance(x, Tensor):
        x = Tensor(x)
    if x.ndim < 2:
        raise ValueError(f"{where}: input must be (N, C, ...) with at least 2 dims, got shape {x.shape}")
    channels, shape = x.shape[1], x.shape
    running_mean = _stat(running_mean, "running_mean", channels, shape, where)
    running_var = _stat(running_var, "running_var", channels, shape, where)
    weight = _affine_param(weight, "weight", channels, shape, where)
    bias = _affine_param(bias, "bias", channels, shape, where)
    eps = _float(eps, "eps", where, 0.0)
    if (weight is None) != (bias is None):  # the op takes both or neither: fill in the identity
        dtype = (weight if weight is not None else bias).dtype
        weight = weight if weight is not None else Tensor(np.ones(channels, dtype))
        bias = bias if bias is not None else Tensor(np.zeros(channels, dtype))
    if not training:
        if running_mean is None or running_var is None:
            raise ValueError(f"{where}: running_mean and running_var are needed when not training")
        # Constants: out = x * scale + shift, scale = weight / sqrt(running_var + eps) (PyTorch's kernel).
        inv_std = (1.0 / np.sqrt(running_var.astype(x.dtype) + eps)).astype(x.dtype, copy=False)
        mean = running_mean.astype(x.dtype, copy=False)
        scale: Any = inv_std if weight is None else weight * inv_std
        shift: Any = -mean * inv_std if bias is None else bias - scale * mean
        cshape = _channel_shape(x.ndim)
        return x * scale.reshape(cshape) + shift.reshape(cshape)
    per_channel = x.size // channels if channels else 0
    if per_channel <= 1:
        raise ValueError(
            f"{where}: expected more than 1 value per channel when training, got input of shape {shape}"
        )
    out = BatchNormFn.apply(x, weight, bias, eps=eps) if weight is not None else BatchNormFn.apply(x, eps=eps)
    if running_mean is not None or running_var is not None:
        momentum = _float(momentum, "momentum", where, 0.0, 1.0)
        axes = (0, *range(2, x.ndim))
        if running_mean is not None:
            running_mean[...] = (1 - momentum) * running_mean + momentum * x.data.mean(axis=axes)
        if running_var is not None:  # the unbiased variance, as PyTorch keeps
            unbiased = x.data.var(axis=axes, ddof=1)
            running_var[...] = (1 - momentum) * running_var + momentum * unbiased
    return out


def batch_norm(
    x: Tensor,
    running_mean: Array | None,
    running_var: Array | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Normalise each channel (axis 1) of x, as ``torch.nn.functional.batch_norm`` (same signature).

    Shapes: x (N, C) or (N, C, *spatial) -> the same; running_mean, running_var (C,) ndarrays (or None);
    weight, bias (C,) Tensors (or None). With ``training`` the batch's own mean and biased variance over
    N and the spatial axes normalise, and the running statistics, when given, are updated in place:
    ``running = (1 - momentum) * running + momentum * batch`` with the *unbiased* batch variance. Without
    ``training`` the running statistics normalise (and are required). Then ``* weight + bias``.

    Raises:
        ValueError: naming the shapes, for fewer than 2 dims, statistics or weight/bias not of shape (C,),
            a batch of one value per channel in training (its variance is undefined), missing running
            statistics in evaluation, or eps/momentum out of range.
    """
    return _batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps, "batch_norm")
