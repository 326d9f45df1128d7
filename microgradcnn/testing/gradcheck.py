"""Central-difference gradient checks in float64 (NumPy only: no hypothesis needed)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from microgradcnn.tensor import Array, Tensor, enable_grad, grad, no_grad

# Outputs up to this size get the full Jacobian checked (one backward per output element): a failure then
# names the output element too. Bigger outputs are checked through a seeded random projection.
FULL_JACOBIAN_MAX_OUTPUTS = 8


class GradcheckError(AssertionError):
    """An analytic gradient disagreed with central finite differences.

    An ``AssertionError``, so pytest shows it as a plain failed check and hypothesis shrinks on it.
    """


def _float64_copies(inputs: Sequence[Any]) -> list[Any]:
    """Float64 copies of the Tensors (same ``requires_grad``); every other input as it is."""
    return [
        Tensor(x.data.astype(np.float64), requires_grad=x.requires_grad) if isinstance(x, Tensor) else x
        for x in inputs
    ]


def within(analytic: Array, numeric: Array, atol: float, rtol: float) -> Array:
    """Elementwise ``|analytic - numeric| <= atol + rtol * |numeric|`` (False where either is not finite)."""
    ok = np.abs(analytic - numeric) <= atol + rtol * np.abs(numeric)
    return ok & np.isfinite(analytic) & np.isfinite(numeric)


def _numeric_vjps(outputs: Callable[[], Array], x: Tensor, vs: Array, eps: float) -> Array:
    """``vs @ d out / d x`` by central differences: (K, *x.shape) for the K projections ``vs`` (K, out.size).

    Perturbs ``x.data`` in place one element at a time (two forwards per element, shared by all K
    projections) and restores it.
    """
    grads = np.zeros((len(vs), x.size), dtype=np.float64)
    flat = x.data.reshape(-1)  # a view: x.data is a fresh contiguous float64 copy made by gradcheck
    for j in range(flat.size):
        orig = flat[j]
        flat[j] = orig + eps
        plus = outputs()
        flat[j] = orig - eps
        minus = outputs()
        flat[j] = orig
        grads[:, j] = vs @ ((plus - minus) / (2 * eps))
    return grads.reshape((len(vs), *x.shape))


def gradcheck(
    fn: Callable[..., Tensor],
    inputs: Sequence[Any] | Tensor,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    *,
    seed: int = 0,
) -> bool:
    """Check the analytic gradients of ``fn(*inputs)`` against central finite differences, in float64.

    Every input ``Tensor`` with ``requires_grad`` is checked, on a float64 copy, so the caller's tensors and
    their ``.grad`` are never touched; constant Tensors become float64 copies too, and other inputs (label
    arrays, numbers, strings, ...) pass through as they are. A single Tensor may stand for ``inputs``.
    ``fn`` must be deterministic: it runs twice per element of every checked input.

    For outputs of at most ``FULL_JACOBIAN_MAX_OUTPUTS`` elements the whole Jacobian is checked, one
    backward per output element; bigger outputs are reduced to one scalar by a seeded random projection
    ``(out * v).sum()`` (the vector-Jacobian product PyTorch's ``fast_mode`` checks), which a wrong gradient
    fails with probability 1. An input that receives no gradient counts as a zero gradient.

    Returns:
        True when every element satisfies ``|analytic - numeric| <= atol + rtol * |numeric|``.

    Raises:
        GradcheckError: naming the input, the output element or projection, the worst element's index and its
            analytic and numeric values, and how many elements are wrong.
        TypeError: when ``fn`` does not return a Tensor.
        ValueError: when no input is a Tensor with ``requires_grad=True`` (nothing would be checked), or
            ``eps`` is not positive.

    >>> import microgradcnn as mg
    >>> gradcheck(lambda t: (t * t).sum(), [mg.Tensor([1.0, -2.0], requires_grad=True)])
    True
    """
    if isinstance(inputs, Tensor):
        inputs = (inputs,)
    xs = _float64_copies(inputs)
    return _check(fn, xs, eps, atol, rtol, seed, "gradcheck", lambda i: f"input {i}")


def _checked_inputs(xs: Sequence[Any], where: str, eps: float) -> list[tuple[int, Tensor]]:
    """(position, Tensor) of the inputs to check, after checking there are some and eps is positive."""
    if not eps > 0:
        raise ValueError(f"{where}: eps must be positive, got {eps!r}")
    checked = [(i, x) for i, x in enumerate(xs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError(
            f"{where}: no input is a Tensor with requires_grad=True, so there is nothing to check; "
            f"e.g. {where}(fn, [Tensor(x, requires_grad=True)])"
        )
    return checked


def _check(fn: Callable[..., Tensor], xs: list[Any], eps: float, atol: float, rtol: float, seed: int,
           where: str, name: Callable[[int], str]) -> bool:
    """gradcheck on the float64 inputs ``xs``; messages start with ``where`` and call input i ``name(i)``."""
    checked = _checked_inputs(xs, where, eps)
    with no_grad():
        out = fn(*xs)
    if not isinstance(out, Tensor):
        raise TypeError(f"{where}: fn must return a Tensor, got {type(out).__name__}")
    if out.size == 0:
        return True
    # float32 arithmetic inside fn makes eps-sized differences mostly rounding noise; say so on failure.
    hint = "" if out.dtype == np.float64 else (
        f"; note: fn returned {out.dtype} for float64 inputs, and central differences need float64 throughout"
    )

    rng = np.random.default_rng(seed)
    if out.size <= FULL_JACOBIAN_MAX_OUTPUTS:
        vs = np.eye(out.size)
        elements = [tuple(int(j) for j in np.unravel_index(k, out.shape)) for k in range(out.size)]
        whats = [f" of output element {e}" if out.ndim else "" for e in elements]
    else:
        vs = rng.standard_normal((1, out.size))
        whats = [" of a random projection of the output"]

    def outputs() -> Array:
        with no_grad():
            return fn(*xs).data.astype(np.float64).reshape(-1)

    numerics = {i: _numeric_vjps(outputs, x, vs, eps) for i, x in checked}
    for k, (what, v) in enumerate(zip(whats, vs, strict=True)):
        for _, x in checked:
            x.grad = None
        y = fn(*xs)
        if y.requires_grad:
            y.backward(v.reshape(out.shape))
        for i, x in checked:
            analytic = np.zeros(x.shape) if x.grad is None else x.grad.astype(np.float64)
            numeric = numerics[i][k]
            ok = within(analytic, numeric, atol, rtol)
            if ok.all():
                continue
            err = np.where(ok, -np.inf, np.abs(analytic - numeric) - rtol * np.abs(numeric))
            idx = np.unravel_index(int(np.argmax(np.nan_to_num(err, nan=np.inf))), x.shape)
            at = f" at index {tuple(int(j) for j in idx)}" if x.ndim else ""
            raise GradcheckError(
                f"{where}: gradient of {name(i)} (shape {x.shape}){what} is wrong{at}: "
                f"analytic {analytic[idx]:.8g}, numeric {numeric[idx]:.8g} "
                f"({int(ok.size - ok.sum())} of {ok.size} elements off; atol={atol}, rtol={rtol}, eps={eps})"
                f"{hint}"
            )
    return True


def gradgradcheck(
    fn: Callable[..., Tensor],
    inputs: Sequence[Any] | Tensor,
    grad_outputs: Any = None,
    *,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    seed: int = 0,
) -> bool:
    """Check second derivatives: the gradients of ``fn``'s vector-Jacobian product, in float64.

    The function checked, as PyTorch's ``gradgradcheck`` builds it, is ``(inputs, v) -> grad(fn(*inputs),
    inputs, v, create_graph=True)``: its derivative with respect to the inputs (the Hessian-vector product)
    and to ``v`` (the Jacobian again) are compared with central differences of it, through ``gradcheck``
    (a seeded random projection of the gradients makes it one scalar). ``v`` is ``grad_outputs`` (one
    Tensor or array of the output's shape) or, by default, seeded standard normal values. Inputs are handled
    as by ``gradcheck``: float64 copies, only Tensors with ``requires_grad`` differentiated, the caller's
    tensors untouched. Every op on the way must have a differentiable backward.

    Returns:
        True when every element satisfies ``|analytic - numeric| <= atol + rtol * |numeric|``.

    Raises:
        GradcheckError: naming the input (``input i``) or ``grad_outputs``, the worst element's index and
            its analytic and numeric values, and how many elements are wrong.
        RuntimeError: when an op's backward cannot be differentiated (the message names the op).
        TypeError: when ``fn`` does not return a Tensor.
        ValueError: when no input is a Tensor with ``requires_grad=True``, ``eps`` is not positive, or
            ``grad_outputs`` does not have the output's shape.

    >>> import microgradcnn as mg
    >>> gradgradcheck(lambda t: (t * t * t).sum(), [mg.Tensor([1.0, -2.0], requires_grad=True)])
    True
    """
    if isinstance(inputs, Tensor):
        inputs = (inputs,)
    xs = _float64_copies(inputs)
    positions = [i for i, _ in _checked_inputs(xs, "gradgradcheck", eps)]
    with no_grad():
        out = fn(*xs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradgradcheck: fn must return a Tensor, got {type(out).__name__}")
    rng = np.random.default_rng(seed)
    if grad_outputs is None:
        v = rng.standard_normal(out.shape)
    else:
        v = np.asarray(grad_outputs.data if isinstance(grad_outputs, Tensor) else grad_outputs, np.float64)
        if v.shape != out.shape:
            raise ValueError(f"gradgradcheck: grad_outputs has shape {v.shape}, the output {out.shape}")
    # One scalar from all the input gradients: a fixed random projection, which a wrong second derivative
    # fails with probability 1 (and full Jacobians of the gradients would cost a backward per element).
    projections = [rng.standard_normal(xs[i].shape) for i in positions]

    def projected_vjp(*args: Any) -> Tensor:
        *ins, vt = args
        with enable_grad():  # gradcheck runs fn under no_grad for its finite differences
            y = fn(*ins)
            grads = grad(y, [ins[i] for i in positions], vt, create_graph=True, allow_unused=True)
        total: Any = Tensor(np.zeros(()))
        for g, r in zip(grads, projections, strict=True):
            if g is not None:
                total = total + (g * r).sum()
        return total if isinstance(total, Tensor) else Tensor(total)

    n = len(xs)
    return _check(projected_vjp, [*xs, Tensor(v, requires_grad=True)], eps, atol, rtol, seed,
                  "gradgradcheck", lambda i: f"input {i}" if i < n else "grad_outputs")
