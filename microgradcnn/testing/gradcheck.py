"""Central-difference gradient checks in float64 (NumPy only: no hypothesis needed)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from microgradcnn.tensor import Array, Tensor, no_grad

# Outputs up to this size get the full Jacobian checked (one backward per output element): a failure then
# names the output element too. Bigger outputs are checked through a seeded random projection.
FULL_JACOBIAN_MAX_OUTPUTS = 8


class GradcheckError(AssertionError):
    """An analytic gradient disagreed with central finite differences."""


def _float64_copies(inputs: Sequence[Any]) -> list[Any]:
    return [
        Tensor(t.data.astype(np.float64), requires_grad=t.requires_grad) if isinstance(t, Tensor) else t
        for t in inputs
    ]


def _numeric_grad(scalar: Callable[[], float], x: Tensor, eps: float) -> Array:
    """d scalar / d x by central differences, perturbing ``x.data`` in place one element at a time."""
    grad = np.zeros(x.shape, dtype=np.float64)
    flat, gflat = x.data.reshape(-1), grad.reshape(-1)  # views: x.data is a fresh contiguous float64 copy
    for j in range(flat.size):
        orig = flat[j]
        flat[j] = orig + eps
        plus = scalar()
        flat[j] = orig - eps
        minus = scalar()
        flat[j] = orig
        gflat[j] = (plus - minus) / (2 * eps)
    return grad


def gradcheck(
    fn: Callable[..., Tensor],
    inputs: Sequence[Any],
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    *,
    seed: int = 0,
) -> bool:
    """Check the analytic gradients of ``fn(*inputs)`` against central finite differences, in float64.

    Every input ``Tensor`` with ``requires_grad`` is checked (other inputs are passed through as they are);
    float32 inputs are checked on float64 copies, so the user's tensors are never touched. For outputs of at
    most ``FULL_JACOBIAN_MAX_OUTPUTS`` elements each output element is checked on its own; bigger outputs are
    reduced to one scalar by a seeded random projection ``(out * v).sum()``, which a wrong gradient fails with
    probability 1. An input that receives no gradient counts as a zero gradient.

    Returns:
        True when every element satisfies ``|analytic - numeric| <= atol + rtol * |numeric|``.

    Raises:
        GradcheckError: naming the input, the worst element's index, and the analytic and numeric values.
        TypeError: when ``fn`` does not return a Tensor.
    """
    xs = _float64_copies(inputs)
    with no_grad():
        out = fn(*xs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    checked = [(i, x) for i, x in enumerate(xs) if isinstance(x, Tensor) and x.requires_grad]
    rng = np.random.default_rng(seed)
    if out.size <= FULL_JACOBIAN_MAX_OUTPUTS:
        projections = [(f" of output element {np.unravel_index(k, out.shape)}", np.eye(out.size)[k])
                       for k in range(out.size)]
    else:
        projections = [(" of a random projection of the output", rng.standard_normal(out.size))]
    for what, v in projections:
        v = v.reshape(out.shape)
        for _, x in checked:
            x.grad = None
        y = fn(*xs)
        if y.requires_grad:
            y.backward(v.astype(y.dtype))

        def scalar(v: Array = v) -> float:
            with no_grad():
                return float(np.sum(fn(*xs).data.astype(np.float64) * v))

        for i, x in checked:
            analytic = np.zeros(x.shape) if x.grad is None else x.grad.astype(np.float64)
            numeric = _numeric_grad(scalar, x, eps)
            err = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
            if err.size and (not np.all(err <= 0) or not np.all(np.isfinite(analytic))):
                k = int(np.nanargmax(np.where(np.isfinite(err), err, np.inf)))
                idx = np.unravel_index(k, x.shape)
                raise GradcheckError(
                    f"gradcheck: gradient of input {i} (shape {x.shape}){what} is wrong at index "
                    f"{tuple(int(j) for j in idx)}: analytic {analytic[idx]:.8g}, numeric {numeric[idx]:.8g} "
                    f"(atol={atol}, rtol={rtol}, eps={eps})"
                )
    return True
