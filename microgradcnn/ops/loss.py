"""Softmax, log-softmax, and the fused cross_entropy loss (stable for logits of any size)."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from microgradcnn._checks import check_int
from microgradcnn.ops.elementwise import ExpFn
from microgradcnn.ops.reduce import normalize_axes
from microgradcnn.ops.shape import reshape
from microgradcnn.tensor import Array, Context, Function, Tensor

REDUCTIONS = ("mean", "sum", "none")


def _log_softmax(x: Array, axis: int) -> Array:
    """log softmax by log-sum-exp: x - max - log(sum(exp(x - max))). Every exp is of a value <= 0."""
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


class SoftmaxFn(Function):
    """s = exp(x - max) / sum(exp(x - max)) along ``axis``. Backward: s * (grad - sum(grad * s)).

    Derivation: docs/ops.md#softmax.
    """

    name = "softmax"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, x: Array, *, axis: int) -> Array:
        e = np.exp(x - x.max(axis=axis, keepdims=True))  # the shift cancels in the ratio and stops overflow
        e /= e.sum(axis=axis, keepdims=True)
        ctx.save_for_backward(e)
        return e

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array]:
        (s,) = ctx.saved_tensors
        gs = grad * s
        return (gs - s * gs.sum(axis=ctx.attrs["axis"], keepdims=True),)


class LogSoftmaxFn(Function):
    """out = x - logsumexp(x) along ``axis``. Backward: grad - exp(out) * sum(grad).

    Derivation: docs/ops.md#log_softmax.
    """

    name = "log_softmax"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, x: Array, *, axis: int) -> Array:
        out = _log_softmax(x, axis)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array]:
        (out,) = ctx.saved_tensors
        return (grad - ExpFn.call(out) * grad.sum(axis=ctx.attrs["axis"], keepdims=True),)


def _axis(x: Tensor, axis: Any, op: str) -> int:
    """``axis`` (an int, negative from the end) as an axis of ``x``, by the ops' one axis rule; 0 for a
    0-d ``x``, which takes axis 0 or -1 as in PyTorch.

    Raises:
        TypeError: for an axis that is not an int (a tuple or None included: softmax takes one axis).
        numpy.exceptions.AxisError: (a ValueError and an IndexError) for an axis out of range.
        ValueError: for an axis of length 0.
    """
    shape = x.data.shape
    axes = normalize_axes(check_int(axis, "axis", op), shape, op)
    if not axes:  # 0-d
        return 0
    if shape[axes[0]] == 0:
        raise ValueError(f"{op}: axis {axis} of x {shape} is empty")
    return axes[0]


def _softmaxes(fn: type[Function], x: Any, axis: Any) -> Tensor:
    """``fn`` (softmax or log_softmax) of ``x`` along ``axis``. A 0-d tensor is one element, a
    distribution over one class: run as shape (1,) and reshaped back, so softmax gives 1 and log_softmax
    0, with gradient 0, as in PyTorch."""
    x = x if isinstance(x, Tensor) else Tensor(x)
    a = _axis(x, axis, fn.name)
    if x.data.shape:
        return fn.apply(x, axis=a)
    return reshape(fn.apply(reshape(x, (1,)), axis=0), ())


def softmax(x: Any, axis: int = -1) -> Tensor:
    """Softmax along ``axis``: non-negative, summing to 1; finite for logits of any size.

    Shapes: any -> the same (a 0-d tensor, one element, gives 1).

    Raises:
        TypeError: for an axis that is not an int.
        ValueError: for an axis out of range (an IndexError too) or of length 0.

    >>> softmax(Tensor([0.0, 1e4])).data
    array([0., 1.], dtype=float32)
    """
    return _softmaxes(SoftmaxFn, x, axis)


def log_softmax(x: Any, axis: int = -1) -> Tensor:
    """log(softmax(x)) along ``axis`` by log-sum-exp: finite even where softmax underflows to 0.

    Shapes: any -> the same (a 0-d tensor, one element, gives 0).

    Raises:
        TypeError: for an axis that is not an int.
        ValueError: for an axis out of range (an IndexError too) or of length 0.

    >>> log_softmax(Tensor([0.0, 1e4])).data
    array([-10000.,      0.], dtype=float32)
    """
    return _softmaxes(LogSoftmaxFn, x, axis)


class CrossEntropyFn(Function):
    """loss_n = -sum_c q[n, c] * log_softmax(logits)[n, c], q = (1 - eps) * onehot(target) + eps / C.

    Fused: backward is (softmax - q) * grad (/ N for the mean), from the saved probabilities; under
    ``create_graph`` the softmax is recomputed from the logits as a recorded op.
    Derivation: docs/ops.md#cross_entropy.
    """

    name = "cross_entropy"
    differentiable_backward = True

    @staticmethod
    def forward(
        ctx: Context, logits: Array, *, target: Array, reduction: str, label_smoothing: float
    ) -> Array:
        n, c = logits.shape
        # Checked here, in the op, as PyTorch's nll_loss checks its targets in its kernel: the wrapper has
        # made ``target`` an (N,) integer array, and this is its only full pass before the gather.
        target = _checked_classes(target, c)
        one = logits.dtype.type
        shifted = logits - logits.max(axis=1, keepdims=True)  # log-sum-exp: every exponent <= 0
        e = np.exp(shifted)
        total = e.sum(axis=1)  # in [1, C]: its log is finite
        lse = np.log(total)  # (N,): logsumexp(logits) - max
        loss = lse - shifted[np.arange(n), target]  # -log p_target = logsumexp - logit_target >= 0
        if label_smoothing:
            # -sum_c log p_c = C * logsumexp - sum_c logit_c (both shifted by the same max)
            eps = one(label_smoothing)
            loss = (one(1) - eps) * loss + (eps / one(c)) * (one(c) * lse - shifted.sum(axis=1))
        e /= total[:, None]
        # The logits (under create_graph the softmax is recomputed from them, as a recorded op), the
        # probabilities for the fused first-order backward, and the checked classes.
        ctx.save_for_backward(logits, e, target)
        if reduction == "none":
            return loss
        summed = loss.sum()
        return np.asarray(summed / one(n) if reduction == "mean" else summed)

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array]:
        logits, p, target = ctx.saved_tensors
        reduction, eps = ctx.attrs["reduction"], ctx.attrs["label_smoothing"]
        n, c = p.shape
        one = p.dtype.type
        # d loss_n / d logits_n = softmax - q. An ordinary backward reuses the forward's probabilities; under
        # create_graph they are recomputed from the logits Tensor, so the softmax is differentiated again.
        if not isinstance(logits, np.ndarray):
            p = SoftmaxFn.call(logits, axis=1)
        q = np.full((n, c), one(eps / c), dtype=p.dtype)  # the smoothed one-hot target, a constant
        q[np.arange(n), target] += one(1 - eps)
        if reduction == "none":
            return ((p - q) * grad.reshape(n, 1),)
        return ((p - q) * (grad / one(n) if reduction == "mean" else grad),)


def _class_targets(target: Any, n: int, c: int) -> Array:
    """``target`` as an (N,) integer array of class indices; their range is checked by the op's forward.

    Raises:
        TypeError: for a target that is not numeric (or is boolean).
        ValueError: naming the bad value, for the wrong shape or length, a fractional value, or (for float
            targets, checked before their cast) a class out of range.
    """
    if type(target) is np.ndarray:  # the training loop's case: no conversion to try
        arr = target
    else:
        try:
            arr = target.data if isinstance(target, Tensor) else np.asarray(target)
        except ValueError as err:  # a ragged list
            raise ValueError(f"cross_entropy: target is not a flat list of class indices ({err})") from None
    kind = arr.dtype.kind
    if kind not in "iuf":
        raise TypeError(f"cross_entropy: target must hold integer class indices, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"cross_entropy: target must be 1-d (N,) class indices, got shape {arr.shape}")
    if len(arr) != n:
        raise ValueError(f"cross_entropy: target has length {len(arr)}, logits have N = {n} rows")
    if kind != "f":
        return arr
    frac = ~np.isfinite(arr) | (arr != np.round(arr))
    if frac.any():
        i = int(np.argmax(frac))
        raise ValueError(f"cross_entropy: target[{i}] = {arr[i]} is not a whole class index")
    # as floats: a huge float cast to int is undefined
    _check_classes(arr, (arr < 0) | (arr >= c), c, prefix="cross_entropy: ")
    return arr.astype(np.intp)


def _checked_classes(target: Array, c: int) -> Array:
    """The integer array ``target`` as a new intp array, checked to lie in [0, C).

    Raises:
        ValueError: naming the first class index out of range.
    """
    try:
        # One small C call casts and checks both ends. Between the step's large kernels, where NumPy's code is
        # cold, the astype + comparison + any() it replaced cost ~25 us at batch 256 (docs/benchmarks.md).
        return np.ravel_multi_index((target,), (c,))
    except ValueError:
        # Seen as unsigned, a negative index is huge (and a uint64 beyond intp's range wraps to a negative
        # index, so it is caught too).
        _check_classes(target, target.astype(np.intp).view(np.uintp) >= c, c)
        raise


def _check_classes(arr: Array, bad: Array, c: int, prefix: str = "") -> None:
    """Raise ValueError naming the first target ``arr[i]`` flagged in ``bad`` as out of range.

    ``prefix`` names the op; inside its forward none is needed, as ``Function.apply`` adds it.
    """
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{prefix}target[{i}] = {arr[i].item()} is out of range for C = {c} classes")


def cross_entropy(
    logits: Any, target: Any, reduction: str = "mean", label_smoothing: float = 0.0
) -> Tensor:
    """Softmax cross-entropy against class indices, as ``torch.nn.functional.cross_entropy`` (no weights).

    Shapes: logits (N, C), target (N,) -> a scalar (``reduction`` "mean" or "sum") or (N,) ("none").
    ``target`` holds class indices: an integer array or list, or a Tensor / float array of whole numbers.
    With ``label_smoothing`` eps the target distribution is (1 - eps) * onehot + eps / C, as in PyTorch.
    One fused op: finite for logits of any size, and its backward is (softmax - onehot) / N in one step.

    Raises:
        ValueError: for logits that are not (N, C) with N, C >= 1, an unknown reduction, eps outside [0, 1],
            or a target of the wrong shape or length, with a fractional value or a class out of range
            (the message names the bad value).
        TypeError: for a non-numeric target.

    >>> cross_entropy(Tensor([[0.0, 0.0], [1e4, -1e4]]), [1, 0], reduction="none").data
    array([0.6931472, 0.       ], dtype=float32)
    """
    logits = logits if isinstance(logits, Tensor) else Tensor(logits)
    shape = logits.data.shape  # a plain tuple: this runs on every training step
    if len(shape) != 2 or 0 in shape:
        raise ValueError(f"cross_entropy: logits must be (N, C) with N, C >= 1, got shape {shape}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"cross_entropy: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    real = type(label_smoothing) is float or isinstance(label_smoothing, numbers.Real)  # float: no ABC check
    if not real or not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing!r}")
    n, c = shape
    target, eps = _class_targets(target, n, c), float(label_smoothing)
    return CrossEntropyFn.apply(logits, target=target, reduction=reduction, label_smoothing=eps)
