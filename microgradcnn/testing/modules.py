"""``check_module_gradients``: prove every parameter and input gradient of a Module right, in seconds."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np

from microgradcnn.tensor import Array, Tensor, no_grad
from microgradcnn.testing.gradcheck import GradcheckError, within

# A parameter or input up to this size is checked coordinate by coordinate; a bigger one along DIRECTIONS
# seeded random unit directions (one directional derivative each: 2 forwards), which catches a wrong gradient
# with probability 1 while costing O(1) forwards instead of O(size).
COORDINATE_MAX_SIZE = 64
DIRECTIONS = 8


def check_module_gradients(
    module: Any,
    *inputs: Any,
    loss: Callable[[Any], Tensor] | None = None,
    seed: int = 0,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
) -> bool:
    """Check the gradients of every parameter and input of ``module`` against central differences.

    Runs on a float64 deep copy of the module (``copy.deepcopy`` then ``.to(np.float64)``), so the
    original, its ``.grad``\\ s and the inputs are untouched. ``loss`` maps the module's output to a
    one-element Tensor; by default it is a fixed random projection ``(out * v).sum()`` (``v`` seeded by
    ``seed``), which makes every output element count. Float inputs (arrays or Tensors, any dtype) are
    checked as float64 Tensors; other inputs (integer labels, numbers) are passed through unchecked.
    Parameters with ``requires_grad=False`` are skipped.

    A tensor of at most ``COORDINATE_MAX_SIZE`` elements is checked coordinate by coordinate; a bigger one
    along ``DIRECTIONS`` seeded random unit directions ``d``, comparing ``grad . d`` with the directional
    derivative ``(L(p + eps d) - L(p - eps d)) / (2 eps)``. So the seed CNN (13,610 parameters) takes about 85
    forward passes: well under a second at batch 2. Directions catch any wrong gradient with probability 1,
    but an error confined to a few coordinates of a huge tensor shrinks by about ``1/sqrt(size)``; check a
    small configuration of the layer (or the op, with ``gradcheck``) to pin such bugs down.

    The module's forward must be deterministic (no dropout-style randomness): it runs twice per check.

    Args:
        module: an ``nn.Module`` (anything with ``named_parameters()``, ``to(dtype)`` and ``__call__``).
        inputs: the positional inputs of ``module(*inputs)``.
        loss: maps the output to a one-element Tensor, e.g. ``lambda out: F.cross_entropy(out, labels)``.
        seed: seeds the default projection and the random directions.
        eps, atol, rtol: as ``gradcheck``: a check passes when
            ``|analytic - numeric| <= atol + rtol * |numeric|``.

    Returns:
        True when every check passes.

    Raises:
        GradcheckError: naming the parameter's dotted name (``"0.weight"``) or ``input i``, the coordinate or
            direction, the analytic and numeric values, and how many checks of that tensor failed.
        TypeError: for a module without ``named_parameters``/``to``, an output that is not a Tensor (with
            the default loss), or a ``loss`` that does not return a Tensor.
        ValueError: for a loss with more than one element or not finite, or a forward that is not
            deterministic.

    >>> from microgradcnn import nn
    >>> layer = nn.Linear(3, 2, rng=np.random.default_rng(0))
    >>> check_module_gradients(layer, np.ones((4, 3), dtype=np.float32))
    True
    """
    who = f"check_module_gradients({type(module).__name__})"
    if not (hasattr(module, "named_parameters") and hasattr(module, "to")):
        raise TypeError(f"{who}: want an nn.Module (with named_parameters() and to(dtype))")
    model = copy.deepcopy(module)
    model.to(np.float64)
    xs = [_float64_input(x) for x in inputs]
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    named += [(f"input {i}", x) for i, x in enumerate(xs) if isinstance(x, Tensor)]
    rng = np.random.default_rng(seed)
    scalar = loss if loss is not None else _projection(model, xs, rng, who)

    def value() -> float:
        with no_grad():
            return float(_loss_of(scalar, model(*xs), who).data.reshape(()))

    first, second = value(), value()
    if not np.isfinite(first):
        raise ValueError(f"{who}: the loss is {first}; gradients can only be checked where it is finite")
    if first != second:
        raise ValueError(f"{who}: two forwards on the same inputs differ; the forward must be deterministic")
    for _, t in named:
        t.grad = None
    _loss_of(scalar, model(*xs), who).backward()

    for name, t in named:
        analytic = np.zeros(t.shape) if t.grad is None else t.grad.astype(np.float64)
        wheres, directions = _directions(t.shape, rng)
        numeric = np.empty(len(directions))
        base = t.data
        for k, d in enumerate(directions):
            t.data = base + eps * d
            plus = value()
            t.data = base - eps * d
            minus = value()
            numeric[k] = (plus - minus) / (2 * eps)
        t.data = base
        got = np.array([np.sum(analytic * d) for d in directions])
        ok = within(got, numeric, atol, rtol)
        if not ok.all():
            k = int(np.argmax(np.where(ok, -np.inf, np.nan_to_num(np.abs(got - numeric), nan=np.inf))))
            raise GradcheckError(
                f"{who}: gradient of {name} (shape {t.shape}) is wrong at {wheres[k]}: analytic "
                f"{got[k]:.8g}, numeric {numeric[k]:.8g} ({int(ok.size - ok.sum())} of {ok.size} checks off; "
                f"atol={atol}, rtol={rtol}, eps={eps})"
            )
    return True


def _float64_input(x: Any) -> Any:
    """A float input as a float64 Tensor that requires grad (a copy); anything else as it is."""
    if isinstance(x, Tensor):
        return Tensor(x.data.astype(np.float64), requires_grad=True)
    if isinstance(x, np.ndarray) and x.dtype.kind == "f":
        return Tensor(x.astype(np.float64), requires_grad=True)
    return x


def _projection(model: Any, xs: list[Any], rng: np.random.Generator, who: str) -> Callable[[Any], Tensor]:
    """The default loss: ``(out * v).sum()`` for a fixed standard-normal ``v`` of the output's shape."""
    with no_grad():
        out = model(*xs)
    if not isinstance(out, Tensor):
        raise TypeError(f"{who}: the module returned a {type(out).__name__}; pass loss= to make it a Tensor")
    v = rng.standard_normal(out.shape)
    return lambda y: (y * v).sum()


def _loss_of(scalar: Callable[[Any], Tensor], out: Any, who: str) -> Tensor:
    value = scalar(out)
    if not isinstance(value, Tensor):
        raise TypeError(f"{who}: loss must return a Tensor, got {type(value).__name__}")
    if value.size != 1:
        raise ValueError(f"{who}: loss must return one element, got shape {value.shape}")
    return value


def _directions(shape: tuple[int, ...], rng: np.random.Generator) -> tuple[list[str], list[Array]]:
    """Unit vectors to differentiate along, with their descriptions: every coordinate, or random ones."""
    size = int(np.prod(shape))
    if size <= COORDINATE_MAX_SIZE:
        eye = np.eye(size)
        return ([f"index {tuple(int(j) for j in np.unravel_index(k, shape))}" for k in range(size)],
                [eye[k].reshape(shape) for k in range(size)])
    directions = []
    for _ in range(DIRECTIONS):
        d = rng.standard_normal(shape)
        directions.append(d / np.linalg.norm(d))
    return [f"random direction {k} of {DIRECTIONS}" for k in range(DIRECTIONS)], directions
