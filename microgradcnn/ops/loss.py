"""Softmax, log-softmax and the losses: the fused cross_entropy (class weights, ignore_index, class
probabilities), nll_loss, mse_loss and binary_cross_entropy_with_logits; stable for logits of any size."""

from __future__ import annotations

import numbers
import warnings
from typing import Any

import numpy as np

from microgradcnn._checks import check_int
from microgradcnn.ops.elementwise import ExpFn, SigmoidFn
from microgradcnn.ops.reduce import normalize_axes
from microgradcnn.ops.shape import ScatterFn, reshape, transpose
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


def _mean_divisor(loss_sum: Array, divisor: Any) -> Array:
    """``loss_sum / divisor`` as a 0-d array; 0 / 0 (every target ignored) is NaN, as in PyTorch."""
    if divisor:  # the usual case: nothing to silence (entering np.errstate costs more than the division)
        return np.asarray(loss_sum / divisor)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(loss_sum / divisor)


def _reduce(loss: Array, reduction: str, divisor: Any) -> Array:
    """The per-element ``loss`` reduced: as it is ("none"), summed, or summed / ``divisor`` ("mean")."""
    if reduction == "none":
        return loss
    summed = loss.sum()
    return _mean_divisor(summed, loss.dtype.type(divisor)) if reduction == "mean" else np.asarray(summed)


def _grad_scale(grad: Any, reduction: str, divisor: Any, dtype: Any) -> Any:
    """d reduced / d per-element loss times ``grad``: grad itself ("none", "sum") or grad / divisor.

    A zero divisor (every target ignored) gives 0: no element reached the loss, as in PyTorch."""
    if reduction != "mean":
        return grad
    return grad * dtype.type(1 / divisor if divisor else 0.0)


def _row_weights(target: Array, weight: Array | None, ignored: Array | None, dtype: Any) -> Array | None:
    """Each target's weight, ``weight[target]`` and 0 where ignored; None when all are 1 (the fast path)."""
    if weight is None and ignored is None:
        return None
    rw = np.ones(len(target), dtype) if weight is None else weight[target]
    return rw if ignored is None else np.where(ignored, dtype.type(0), rw)


class CrossEntropyFn(Function):
    """loss_n = sum_c Q[n, c] * (logsumexp(logits_n) - logits[n, c]), the cross-entropy of log_softmax
    against the constant target weights Q[n, c] = m_n * ((1 - eps) * w_c * [c = t_n] + eps / C * w_c)
    (m_n = 0 for an ignored target, w the class weights, eps the label smoothing). "mean" divides by
    sum_n m_n * w_{t_n}, as PyTorch.

    Fused: backward is (S_n * softmax - Q) * grad (/ the divisor for the mean), S_n = sum_c Q[n, c], from the
    saved probabilities; under ``create_graph`` the softmax is recomputed from the logits as a recorded op.
    Derivation: docs/ops.md#cross_entropy.
    """

    name = "cross_entropy"
    differentiable_backward = True

    @staticmethod
    def forward(
        ctx: Context,
        logits: Array,
        *,
        target: Array,
        reduction: str,
        label_smoothing: float,
        weight: Array | None = None,
        ignore_index: int = -100,
    ) -> Array:
        n, c = logits.shape
        # Checked here, in the op, as PyTorch's nll_loss checks its targets in its kernel: the wrapper has
        # made ``target`` an (N,) integer array, and this is its only full pass before the gather.
        target, ignored = _checked_classes(target, c, ignore_index)
        one = logits.dtype.type
        shifted = logits - logits.max(axis=1, keepdims=True)  # log-sum-exp: every exponent <= 0
        e = np.exp(shifted)
        total = e.sum(axis=1)  # in [1, C]: its log is finite
        lse = np.log(total)  # (N,): logsumexp(logits) - max
        loss = lse - shifted[np.arange(n), target]  # -log p_target = logsumexp - logit_target >= 0
        rw = _row_weights(target, weight, ignored, logits.dtype)
        if rw is not None:
            loss = rw * loss
        if label_smoothing:
            # -sum_c w_c log p_c = (sum_c w_c) * logsumexp - sum_c w_c logit_c (both shifted by the same max)
            eps = one(label_smoothing)
            if weight is None:
                smooth = one(c) * lse - shifted.sum(axis=1)
            else:
                smooth = weight.sum() * lse - shifted @ weight
            if ignored is not None:
                smooth = np.where(ignored, one(0), smooth)
            loss = (one(1) - eps) * loss + (eps / one(c)) * smooth
        e /= total[:, None]
        divisor = n if rw is None else rw.sum()
        # The logits (under create_graph the softmax is recomputed from them, as a recorded op), the
        # probabilities for the fused first-order backward, and constants: classes, row weights, mask,
        # divisor.
        ctx.save_for_backward(logits, e, target, rw, ignored, divisor)
        return _reduce(loss, reduction, divisor)

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array]:
        logits, p, target, rw, ignored, divisor = ctx.saved_tensors
        reduction, eps, weight = ctx.attrs["reduction"], ctx.attrs["label_smoothing"], ctx.attrs.get("weight")
        n, c = p.shape
        one = p.dtype.type
        # d loss_n / d logits_n = S_n * softmax - Q_n. An ordinary backward reuses the forward's
        # probabilities; under create_graph they are recomputed from the logits Tensor, so the softmax is
        # differentiated again.
        if not isinstance(logits, np.ndarray):
            p = SoftmaxFn.call(logits, axis=1)
        # Q, the (smoothed, weighted, masked) target, a constant
        q = np.zeros((n, c), p.dtype)
        if eps:
            q += one(eps / c) if weight is None else one(eps / c) * weight
        if ignored is not None:
            q[ignored] = 0
        if rw is None:  # no weights and nothing ignored: one target per row, set by one assignment
            q[np.arange(n), target] = one(1 - eps) + one(eps / c) if eps else one(1)
        else:
            q[np.arange(n), target] += one(1 - eps) * rw
        dl = p - q if weight is None and ignored is None else p * q.sum(axis=1, keepdims=True) - q
        scale = _grad_scale(grad, reduction, divisor, p.dtype)
        return (dl * (scale.reshape(n, 1) if reduction == "none" else scale),)


class NllLossFn(Function):
    """loss_n = -w_{t_n} * log_probs[n, t_n] (0 for an ignored target); "mean" divides by the sum of the
    kept targets' weights, as PyTorch.

    Linear in ``log_probs``: backward scatters -w_{t_n} * grad to (n, t_n), a ``scatter`` op whose own
    backward is a gather. Derivation: docs/ops.md#nll_loss.
    """

    name = "nll_loss"
    differentiable_backward = True

    @staticmethod
    def forward(
        ctx: Context,
        log_probs: Array,
        *,
        target: Array,
        weight: Array | None,
        ignore_index: int,
        reduction: str,
    ) -> Array:
        n, c = log_probs.shape
        target, ignored = _checked_classes(target, c, ignore_index)
        rw = _row_weights(target, weight, ignored, log_probs.dtype)
        picked = log_probs[np.arange(n), target]
        loss = -picked if rw is None else -(rw * picked)
        divisor = n if rw is None else rw.sum()
        # Linear in log_probs: only constants are needed (classes, row weights, divisor, shape, dtype).
        ctx.save_for_backward(target, rw, divisor, (n, c), log_probs.dtype)
        return _reduce(loss, reduction, divisor)

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array]:
        target, rw, divisor, (n, c), dtype = ctx.saved_tensors
        coef = -np.ones(n, dtype) if rw is None else -rw  # (N,): d loss_n / d log_probs[n, t_n]
        values = coef * _grad_scale(grad, ctx.attrs["reduction"], divisor, dtype)
        return (ScatterFn.call(values, shape=(n, c), index=(np.arange(n), target), unique=True),)


def _class_targets(target: Any, n: int, c: int, op: str = "cross_entropy") -> Array:
    """``target`` as an (N,) integer array of class indices; their range is checked by the op's forward.

    Raises:
        TypeError: for a target that is not numeric (or is boolean).
        ValueError: naming the bad value, for the wrong shape or length, a fractional value, or (for float
            targets, checked before their cast) a class out of range.
    """
    arr = _target_array(target, op)
    kind = arr.dtype.kind
    if kind not in "iuf":
        raise TypeError(f"{op}: target must hold integer class indices, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{op}: target must be 1-d (N,) class indices, got shape {arr.shape}")
    if len(arr) != n:
        raise ValueError(f"{op}: target has length {len(arr)}, logits have N = {n} rows")
    return _whole_classes(arr, c, op) if kind == "f" else arr


def _target_array(target: Any, op: str) -> Array:
    """``target`` (an array, Tensor or list) as an ndarray, without a copy where it already is one."""
    if type(target) is np.ndarray:  # the training loop's case: no conversion to try
        return target
    try:
        return target.data if isinstance(target, Tensor) else np.asarray(target)
    except ValueError as err:  # a ragged list
        raise ValueError(f"{op}: target is not a flat list of class indices ({err})") from None


def _whole_classes(arr: Array, c: int, op: str) -> Array:
    """A float target of class indices as intp, checked whole and (before the cast) in [0, C).

    Raises:
        ValueError: naming the first fractional or out-of-range value.
    """
    frac = ~np.isfinite(arr) | (arr != np.round(arr))
    if frac.any():
        i = int(np.argmax(frac))
        raise ValueError(f"{op}: target[{i}] = {arr[i]} is not a whole class index")
    # as floats: a huge float cast to int is undefined
    _check_classes(arr, (arr < 0) | (arr >= c), c, prefix=f"{op}: ")
    return arr.astype(np.intp)


def _checked_classes(target: Array, c: int, ignore_index: int = -100) -> tuple[Array, Array | None]:
    """The integer array ``target`` as a new intp array checked to lie in [0, C), and the mask of targets
    equal to ``ignore_index`` (None when there are none); ignored positions hold class 0.

    Raises:
        ValueError: naming the first class index out of range that is not ignored.
    """
    ignored = None
    if 0 <= ignore_index < c:  # an ignored class is in range: only a comparison finds it
        ignored = target == ignore_index
    try:
        # One small C call casts and checks both ends. Between the step's large kernels, where NumPy's code is
        # cold, the astype + comparison + any() it replaced cost ~25 us at batch 256 (docs/benchmarks.md).
        classes = np.ravel_multi_index((target,), (c,))
    except ValueError:
        ignored = target == ignore_index
        kept = np.where(ignored, 0, target)
        # Seen as unsigned, a negative index is huge (and a uint64 beyond intp's range wraps to a negative
        # index, so it is caught too).
        _check_classes(target, kept.astype(np.intp).view(np.uintp) >= c, c)
        classes = kept.astype(np.intp)
    if ignored is not None:
        if not ignored.any():
            ignored = None
        elif 0 <= ignore_index < c:
            classes = np.where(ignored, 0, classes)
    return classes, ignored


def _check_classes(arr: Array, bad: Array, c: int, prefix: str = "") -> None:
    """Raise ValueError naming the first target ``arr[i]`` flagged in ``bad`` as out of range.

    ``prefix`` names the op; inside its forward none is needed, as ``Function.apply`` adds it.
    """
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{prefix}target[{i}] = {arr[i].item()} is out of range for C = {c} classes")


def _check_reduction(reduction: Any, op: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _constant(value: Any, what: str, op: str, dtype: Any) -> Array | None:
    """A weight argument as an array of ``dtype`` (None stays None). Weights are constants, as in PyTorch's
    nll_loss: a Tensor that requires grad is refused rather than silently given no gradient.

    Raises:
        ValueError: for a Tensor weight that requires grad, or a weight that is not numeric.
    """
    if value is None:
        return None
    if isinstance(value, Tensor):
        if value.requires_grad:
            raise ValueError(f"{op}: {what} is a constant and gets no gradient; pass {what}.detach()")
        value = value.data
    arr = np.asarray(value)
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{op}: {what} must be numeric, got dtype {arr.dtype}")
    return arr.astype(dtype, copy=False)


def _class_weight(weight: Any, c: int, op: str, dtype: Any) -> Array | None:
    """The per-class ``weight`` as a (C,) array of ``dtype``, or None.

    Raises:
        ValueError: for a weight that is not (C,), naming both, or one that requires grad.
    """
    w = _constant(weight, "weight", op, dtype)
    if w is not None and w.shape != (c,):
        raise ValueError(f"{op}: weight must have one value per class, shape ({c},), got shape {w.shape}")
    return w


def _rows(x: Tensor, op: str, what: str) -> tuple[Tensor, tuple[int, ...]]:
    """(N, C) or spatial (N, C, d1, ...) scores as (M, C) rows, M = N * d1 * ..., by a recorded transpose
    and reshape; and the per-element loss shape (N, d1, ...).

    Raises:
        ValueError: for scores of fewer than 2 axes or with an empty axis.
    """
    shape = x.data.shape  # a plain tuple: this runs on every training step
    if len(shape) < 2 or 0 in shape:
        raise ValueError(f"{op}: {what} must be (N, C) or (N, C, d1, ...) with no empty axis, "
                         f"got shape {shape}")
    if len(shape) == 2:
        return x, (shape[0],)
    c, loss_shape = shape[1], (shape[0], *shape[2:])
    moved = transpose(x, (0, *range(2, len(shape)), 1))  # C last: each row is one position's scores
    return reshape(moved, (-1, c)), loss_shape


def _spatial_classes(target: Any, loss_shape: tuple[int, ...], c: int, op: str) -> Array:
    """Class indices (N, d1, ...) for spatial scores, flattened to (M,) rows like the scores.

    Raises:
        TypeError, ValueError: as ``_class_targets``, for the shape (N, d1, ...).
    """
    arr = _target_array(target, op)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{op}: target must hold integer class indices, got dtype {arr.dtype}")
    if arr.shape != loss_shape:
        raise ValueError(f"{op}: target must be class indices of shape (N, d1, ...) = {loss_shape}, "
                         f"got shape {arr.shape}")
    flat = arr.reshape(-1)
    return _whole_classes(flat, c, op) if flat.dtype.kind == "f" else flat


def _targets_for_rows(target: Any, loss_shape: tuple[int, ...], c: int, op: str) -> Array:
    if len(loss_shape) == 1:
        return _class_targets(target, loss_shape[0], c, op)
    return _spatial_classes(target, loss_shape, c, op)


def _unflatten(loss: Tensor, reduction: str, loss_shape: tuple[int, ...]) -> Tensor:
    """The per-row losses back in the (N, d1, ...) shape ("none"); a reduced loss as it is."""
    return reshape(loss, loss_shape) if reduction == "none" and len(loss_shape) > 1 else loss


def _is_probability_target(target: Any, ndim: int) -> bool:
    """A float target with as many axes as the logits holds class probabilities (PyTorch's rule)."""
    arr = target.data if isinstance(target, Tensor) else target
    if not isinstance(arr, np.ndarray):
        try:
            arr = np.asarray(arr)
        except ValueError:  # ragged: reported as a bad class-index target
            return False
    return arr.dtype.kind == "f" and arr.ndim == ndim


def _probability_cross_entropy(
    logits: Tensor, target: Any, weight: Array | None, reduction: str, eps: float
) -> Tensor:
    """-sum_c w_c * ((1 - eps) * P[n, c] + eps / C) * log_softmax(logits)[n, c], composed of registry ops
    (log_softmax, mul, sum, mean), so a Tensor target that requires grad gets its gradient too; "mean"
    averages over N * d1 * ..., as PyTorch."""
    shape, c = logits.data.shape, logits.data.shape[1]
    # an array target takes the logits' dtype (float32 logits stay float32)
    target = target if isinstance(target, Tensor) else Tensor(np.asarray(target, dtype=logits.dtype))
    if target.data.shape != shape:
        raise ValueError(f"cross_entropy: probability target must have the logits' shape {shape}, "
                         f"got shape {target.data.shape}")
    dtype = logits.dtype.type
    q = target * dtype(1 - eps) + dtype(eps / c) if eps else target
    if weight is not None:
        q = q * weight.reshape((c,) + (1,) * (len(shape) - 2))
    per = -(log_softmax(logits, axis=1) * q).sum(axis=1)
    if reduction == "none":
        return per
    return per.mean() if reduction == "mean" else per.sum()


def cross_entropy(
    logits: Any,
    target: Any,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """Softmax cross-entropy, as ``torch.nn.functional.cross_entropy``.

    Shapes: logits (N, C) or (N, C, d1, ...); ``target`` either class indices (N,) / (N, d1, ...) (an integer
    array or list, or a Tensor / float array of whole numbers) or class probabilities of the logits' shape
    (a float array or Tensor with as many axes as the logits; a Tensor target that requires grad gets its
    gradient). The result is a scalar ("mean", "sum") or (N, d1, ...) ("none").

    ``weight`` (C,) scales each class's term (a constant, no gradient); targets equal to ``ignore_index``
    add nothing. With ``label_smoothing`` eps the target is (1 - eps) * target + eps / C. "mean" divides by
    the summed weights of the non-ignored targets (NaN if all are ignored), or by N * d1 * ... for
    probability targets, as PyTorch. Class indices go through one fused op, finite for logits of any size,
    whose backward is (softmax - target) / N in one step.

    Raises:
        ValueError: for logits that are not (N, C, ...) with no empty axis, an unknown reduction, eps outside
            [0, 1], a weight that is not (C,), a target of the wrong shape or length, with a fractional value
            or a class out of range (the message names the bad value), or a non-negative ``ignore_index``
            with probability targets (PyTorch refuses it too).
        TypeError: for a non-numeric target or a non-int ignore_index.

    >>> cross_entropy(Tensor([[0.0, 0.0], [1e4, -1e4]]), [1, 0], reduction="none").data
    array([0.6931472, 0.       ], dtype=float32)
    """
    if (
        type(target) is np.ndarray
        and target.dtype.kind in "iu"
        and type(logits) is Tensor
        and weight is None
        and ignore_index == -100
        and type(label_smoothing) is float
        and not label_smoothing
        and reduction in REDUCTIONS
        and len(logits.data.shape) == 2
        and target.shape == logits.data.shape[:1]
        and 0 not in logits.data.shape
    ):  # the training loop's call: (N, C) scores and (N,) integer classes, whose range the op checks
        return CrossEntropyFn.apply(logits, target=target, reduction=reduction, label_smoothing=0.0)
    op = "cross_entropy"
    logits = logits if isinstance(logits, Tensor) else Tensor(logits)
    rows, loss_shape = _rows(logits, op, "logits")
    _check_reduction(reduction, op)
    if type(label_smoothing) is not float or label_smoothing:  # the default 0.0 needs no check
        real = isinstance(label_smoothing, numbers.Real)
        if not real or not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing!r}")
    if ignore_index != -100:
        check_int(ignore_index, "ignore_index", op)
    c, eps = logits.data.shape[1], float(label_smoothing)
    w = None if weight is None else _class_weight(weight, c, op, logits.dtype)
    if _is_probability_target(target, logits.ndim):
        if ignore_index >= 0:
            raise ValueError(f"{op}: ignore_index={ignore_index} needs class-index targets; probability "
                             "targets cannot ignore a class (leave ignore_index at its default, -100)")
        return _probability_cross_entropy(logits, target, w, reduction, eps)
    classes = _targets_for_rows(target, loss_shape, c, op)
    attrs: dict[str, Any] = {"target": classes, "reduction": reduction, "label_smoothing": eps}
    if w is not None:
        attrs["weight"] = w
    if ignore_index != -100:
        attrs["ignore_index"] = ignore_index
    return _unflatten(CrossEntropyFn.apply(rows, **attrs), reduction, loss_shape)


def nll_loss(
    log_probs: Any, target: Any, weight: Any = None, ignore_index: int = -100, reduction: str = "mean"
) -> Tensor:
    """Negative log-likelihood of class indices, as ``torch.nn.functional.nll_loss``: -w_t * log_probs[t].

    Shapes: log_probs (N, C) or (N, C, d1, ...) (log-probabilities, e.g. from ``log_softmax(x, axis=1)``),
    target (N,) / (N, d1, ...) class indices -> a scalar ("mean", "sum") or (N, d1, ...) ("none").
    ``weight`` (C,) scales each class (a constant); targets equal to ``ignore_index`` add nothing; "mean"
    divides by the summed weights of the non-ignored targets (NaN if all are ignored).

    Raises:
        ValueError: for log_probs that are not (N, C, ...) with no empty axis, an unknown reduction, a weight
            that is not (C,), or a target of the wrong shape or out of range (naming the value).
        TypeError: for a non-numeric target or a non-int ignore_index.

    >>> nll_loss(Tensor([[-0.5, -1.0], [-2.0, -0.1]]), [1, 0], reduction="sum").item()
    3.0
    """
    op = "nll_loss"
    log_probs = log_probs if isinstance(log_probs, Tensor) else Tensor(log_probs)
    rows, loss_shape = _rows(log_probs, op, "log_probs")
    _check_reduction(reduction, op)
    check_int(ignore_index, "ignore_index", op)
    c = log_probs.data.shape[1]
    w = _class_weight(weight, c, op, log_probs.dtype)
    classes = _targets_for_rows(target, loss_shape, c, op)
    loss = NllLossFn.apply(rows, target=classes, weight=w, ignore_index=ignore_index, reduction=reduction)
    return _unflatten(loss, reduction, loss_shape)


class MseLossFn(Function):
    """loss = (input - target) ** 2 elementwise, reduced. Backward: 2 * (input - target) * grad (/ the
    element count for the mean) for the input, its negative for the target; the engine reduces a
    broadcast. Derivation: docs/ops.md#mse_loss.
    """

    name = "mse_loss"
    differentiable_backward = True

    @staticmethod
    def forward(ctx: Context, x: Array, target: Array, *, reduction: str) -> Array:
        d = x - target
        ctx.save_for_backward(x, target)
        return _reduce(d * d, reduction, d.size)

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array | None, Array | None]:
        x, target = ctx.saved_tensors
        size = int(np.prod(np.broadcast_shapes(x.shape, target.shape)))
        dx = (x - target) * _grad_scale(grad * 2, ctx.attrs["reduction"], size, np.dtype(x.dtype))
        gx, gt = ctx.needs_input_grad[:2]
        return (dx if gx else None, -dx if gt else None)


def _tensor(x: Any) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


def mse_loss(input: Any, target: Any, reduction: str = "mean") -> Tensor:
    """Mean squared error, as ``torch.nn.functional.mse_loss``: (input - target) ** 2, reduced.

    Shapes: input and target the same shape (any) -> a scalar ("mean", "sum") or that shape ("none").
    Shapes that differ but broadcast are broadcast with a warning, as PyTorch (usually a bug: (N,) against
    (N, 1) gives (N, N)). Both may require grad.

    Raises:
        ValueError: for an unknown reduction or shapes that do not broadcast (naming both).

    >>> mse_loss(Tensor([1.0, 2.0]), Tensor([0.0, 4.0])).item()
    2.5
    """
    op = "mse_loss"
    x, t = _tensor(input), _tensor(target)
    _check_reduction(reduction, op)
    if x.data.shape != t.data.shape:
        try:
            shape = np.broadcast_shapes(x.data.shape, t.data.shape)
        except ValueError:
            msg = f"{op}: input {x.data.shape} and target {t.data.shape} do not broadcast"
            raise ValueError(msg) from None
        warnings.warn(f"{op}: target {t.data.shape} differs from input {x.data.shape}; both are broadcast to "
                      f"{shape}, which is likely wrong", UserWarning, stacklevel=2)
    return MseLossFn.apply(x, t, reduction=reduction)


class BinaryCrossEntropyWithLogitsFn(Function):
    """loss = w * ((1 - y) * x + l * softplus(-x)), l = 1 + (pos_weight - 1) * y, softplus(-x) =
    log(1 + e**-x) by log-add-exp (finite for any x); reduced.

    Backward: x gets w * ((1 - y) - l * (1 - sigmoid(x))) * grad, y gets w * ((pos_weight - 1) *
    softplus(-x) - x) * grad (/ the element count for the mean); softplus(-x) is this op with y = 1, so
    the rule is made of ops and twice differentiable.
    Derivation: docs/ops.md#binary_cross_entropy_with_logits.
    """

    name = "binary_cross_entropy_with_logits"
    differentiable_backward = True

    @staticmethod
    def forward(
        ctx: Context,
        x: Array,
        target: Array,
        *,
        weight: Array | None,
        pos_weight: Array | None,
        reduction: str,
    ) -> Array:
        one = x.dtype.type
        softplus = np.logaddexp(one(0), -x)  # log(1 + e**-x) without overflow at |x| = 1e4
        scale = softplus if pos_weight is None else (one(1) + (pos_weight - one(1)) * target) * softplus
        loss = (one(1) - target) * x + scale
        if weight is not None:
            loss = loss * weight
        ctx.save_for_backward(x, target)
        return _reduce(loss, reduction, loss.size)

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array | None, Array | None]:
        x, y = ctx.saved_tensors
        weight, pos_weight = ctx.attrs["weight"], ctx.attrs["pos_weight"]
        g = _grad_scale(grad, ctx.attrs["reduction"], int(np.prod(x.shape)), np.dtype(x.dtype))
        if weight is not None:
            g = g * weight
        gx = gy = None
        if ctx.needs_input_grad[0]:
            s = SigmoidFn.call(x)
            # (1 - y) - l * (1 - s); with l = 1 it is s - y
            gx = g * (s - y if pos_weight is None else (1 - y) - (1 + (pos_weight - 1) * y) * (1 - s))
        if ctx.needs_input_grad[1]:
            if pos_weight is None:
                gy = g * -x
            else:
                ones = np.ones((), dtype=x.dtype)
                softplus = BinaryCrossEntropyWithLogitsFn.call(x, ones, weight=None, pos_weight=None,
                                                               reduction="none")
                gy = g * ((pos_weight - 1) * softplus - x)
        return gx, gy


def _broadcast_weight(value: Any, what: str, shape: tuple[int, ...], op: str, dtype: Any) -> Array | None:
    """A weight that broadcasts to the input's ``shape`` (without changing it), as an array of ``dtype``.

    Raises:
        ValueError: for a weight whose shape does not broadcast to ``shape`` or that requires grad.
    """
    w = _constant(value, what, op, dtype)
    if w is not None:
        try:
            fits = np.broadcast_shapes(w.shape, shape) == shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(f"{op}: {what} of shape {w.shape} does not broadcast to the input's shape "
                             f"{shape}")
    return w


def binary_cross_entropy_with_logits(
    input: Any, target: Any, weight: Any = None, reduction: str = "mean", pos_weight: Any = None
) -> Tensor:
    """Sigmoid + binary cross-entropy in one stable op, as PyTorch's ``binary_cross_entropy_with_logits``:
    -w * (pos_weight * y * log sigmoid(x) + (1 - y) * log(1 - sigmoid(x))), computed by log-add-exp, so it
    is finite (and exact) for logits of any size, 1e4 included.

    Shapes: input (logits) and target (probabilities in [0, 1]) the same shape -> a scalar ("mean", "sum")
    or that shape ("none"). ``weight`` broadcasts to the input's shape (per element); ``pos_weight``
    too (usually (C,), the last axis: one weight per class for its positives). Both are constants; input and
    target may require grad.

    Raises:
        ValueError: for input and target of different shapes, a weight that does not broadcast to the input,
            or an unknown reduction.

    >>> binary_cross_entropy_with_logits(Tensor([1e4, -1e4]), Tensor([0.0, 0.0]), reduction="none").data
    array([10000.,     0.], dtype=float32)
    """
    op = "binary_cross_entropy_with_logits"
    x, y = _tensor(input), _tensor(target)
    if x.data.shape != y.data.shape:
        raise ValueError(f"{op}: target shape {y.data.shape} must be the input's shape {x.data.shape}")
    _check_reduction(reduction, op)
    shape = x.data.shape
    w = _broadcast_weight(weight, "weight", shape, op, x.dtype)
    pw = _broadcast_weight(pos_weight, "pos_weight", shape, op, x.dtype)
    return BinaryCrossEntropyWithLogitsFn.apply(x, y, weight=w, pos_weight=pw, reduction=reduction)
