"""Every hypothesis strategy of the project: tensors, shapes, and one ``OpCase`` strategy per registered op.

Needs the ``testing`` extra (``pip install "microgradcnn[testing]"``). Values are drawn away from the points
where finite differences lie (relu at 0, ties under max, log near 0), so a failing check means a wrong
gradient, not a kink.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

try:
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp
except ModuleNotFoundError as err:  # pragma: no cover - depends on the environment
    raise ModuleNotFoundError(
        'microgradcnn.testing.strategies needs hypothesis: pip install "microgradcnn[testing]"'
    ) from err

from microgradcnn import ops
from microgradcnn.tensor import Tensor

MAX_SIDE = 4


@dataclass(frozen=True)
class OpCase:
    """One drawn problem for an op: ``fn(*inputs)`` returns a Tensor whose gradients get checked."""

    fn: Callable[..., Tensor]
    inputs: tuple[Any, ...]


def floats(low: float = -2.0, high: float = 2.0) -> st.SearchStrategy[float]:
    """Finite float64 values in [low, high]."""
    return st.floats(low, high, allow_nan=False, allow_infinity=False, width=64)


def away_from_zero(low: float = 0.1, high: float = 2.0) -> st.SearchStrategy[float]:
    """Values with ``low <= |x| <= high``: keeps relu, abs and division away from their kink or pole."""
    return st.builds(lambda s, m: s * m, st.sampled_from([-1.0, 1.0]), floats(low, high))


def shapes(min_dims: int = 0, max_dims: int = 3, min_side: int = 1, max_side: int = MAX_SIDE) -> Any:
    """Array shapes (0-d included by default)."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def broadcastable_shapes(num_shapes: int = 2, max_dims: int = 3, max_side: int = MAX_SIDE) -> Any:
    """Tuples of ``num_shapes`` shapes that broadcast together (size-1 axes, missing axes and 0-d included)."""
    return hnp.mutually_broadcastable_shapes(
        num_shapes=num_shapes, min_dims=0, max_dims=max_dims, max_side=max_side
    ).map(lambda r: r.input_shapes)


def arrays(shape: Any, elements: st.SearchStrategy[float] | None = None, dtype: Any = np.float64) -> Any:
    """NumPy arrays of ``shape`` (a shape or a strategy of shapes) with the given elements."""
    return hnp.arrays(dtype, shape, elements=elements if elements is not None else floats())


def tensors(
    shape: Any = None,
    dtype: Any = np.float64,
    elements: st.SearchStrategy[float] | None = None,
    requires_grad: bool = True,
) -> st.SearchStrategy[Tensor]:
    """``Tensor``s of ``shape`` (default: any shape up to 3-d) with float64 values in [-2, 2] by default."""
    return arrays(shape if shape is not None else shapes(), elements, dtype).map(
        lambda a: Tensor(a, requires_grad=requires_grad)
    )


@st.composite
def distinct_arrays(draw: st.DrawFn, shape: Any, spacing: float = 0.1) -> np.ndarray:
    """Arrays of ``shape`` whose values all differ by at least ``spacing``: no ties for max or max-pool.

    A shuffled grid ``spacing * (k - size/2)``, so a finite-difference step never changes which is largest.
    """
    shape = draw(shape) if isinstance(shape, st.SearchStrategy) else shape
    size = int(np.prod(shape))
    perm = draw(st.permutations(range(size))) if size > 1 else list(range(size))
    return (spacing * (np.asarray(perm, dtype=np.float64) - size / 2)).reshape(shape)


def class_targets(n: int, num_classes: int) -> st.SearchStrategy[np.ndarray]:
    """int64 class indices of shape (n,), each in [0, num_classes)."""
    return hnp.arrays(np.int64, (n,), elements=st.integers(0, num_classes - 1))


def _grad(a: np.ndarray) -> Tensor:
    return Tensor(a, requires_grad=True)


def _binary(fn: Callable[..., Tensor], right: st.SearchStrategy[float] | None = None) -> Any:
    @st.composite
    def cases(draw: st.DrawFn) -> OpCase:
        sa, sb = draw(broadcastable_shapes())
        a = draw(arrays(sa))
        b = draw(arrays(sb, right))
        return OpCase(fn, (_grad(a), _grad(b)))

    return cases


def _unary(fn: Callable[..., Tensor], elements: st.SearchStrategy[float] | None = None) -> Any:
    return lambda: arrays(shapes(), elements).map(lambda a: OpCase(fn, (_grad(a),)))


@st.composite
def axes(draw: st.DrawFn, ndim: int) -> int | tuple[int, ...] | None:
    """An ``axis`` argument for a tensor of ``ndim`` dims: None, an int, or a tuple; negative ones too."""
    if ndim == 0:
        return None
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        return None
    if kind == "int":
        return draw(st.integers(-ndim, ndim - 1))
    chosen = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    return tuple(a - ndim if draw(st.booleans()) else a for a in chosen)


def _reduction(name: str, values: Callable[[tuple[int, ...]], Any]) -> Any:
    @st.composite
    def cases(draw: st.DrawFn) -> OpCase:
        shape = draw(shapes())
        x = draw(values(shape))
        axis, keepdims = draw(axes(len(shape))), draw(st.booleans())
        fn = getattr(ops, name)
        return OpCase(lambda t: fn(t, axis=axis, keepdims=keepdims), (_grad(x),))

    return cases


@st.composite
def pow_cases(draw: st.DrawFn) -> OpCase:
    """x ** p with p in a few integer and fractional exponents; x > 0 so every p is smooth."""
    p = draw(st.sampled_from([-2.0, -1.0, 0.5, 1.0, 2.0, 3.0, 2.5]))
    x = draw(arrays(shapes(), floats(0.5, 2.0)))
    return OpCase(lambda t: ops.pow(t, p), (_grad(x),))


@st.composite
def rpow_cases(draw: st.DrawFn) -> OpCase:
    """b ** x for a positive base."""
    b = draw(st.sampled_from([0.5, 2.0, float(np.e), 10.0]))
    x = draw(arrays(shapes(), floats(-2.0, 2.0)))
    return OpCase(lambda t: ops.pow(b, t), (_grad(x),))


@st.composite
def reshape_cases(draw: st.DrawFn) -> OpCase:
    """A reshape to another shape of the same size, sometimes with -1."""
    shape = draw(shapes())
    size = int(np.prod(shape))
    target = draw(st.sampled_from([(-1,), tuple(reversed(shape)), (1, *shape), (size, 1), (-1, 1)]))
    return OpCase(lambda t: ops.reshape(t, target), (_grad(draw(arrays(shape))),))


@st.composite
def transpose_cases(draw: st.DrawFn) -> OpCase:
    """A permutation of the axes (or None: reversed)."""
    shape = draw(shapes())
    perm = draw(st.none() | st.permutations(range(len(shape))).map(tuple))
    return OpCase(lambda t: ops.transpose(t, perm), (_grad(draw(arrays(shape))),))


@st.composite
def getitem_cases(draw: st.DrawFn) -> OpCase:
    """Indexing with an int, a slice, None, or an integer array with repeated indices."""
    shape = draw(shapes(min_dims=1))
    n = shape[0]
    index = draw(
        st.one_of(
            st.integers(-n, n - 1),
            st.builds(slice, st.none() | st.integers(-n, n), st.none() | st.integers(-n, n), st.sampled_from([None, 1, 2, -1])),
            st.just((None, Ellipsis)),
            st.lists(st.integers(-n, n - 1), min_size=1, max_size=5).map(np.asarray),
            st.tuples(st.lists(st.integers(0, n - 1), min_size=1, max_size=3).map(np.asarray), st.just(Ellipsis)),
        )
    )
    return OpCase(lambda t: ops.getitem(t, index), (_grad(draw(arrays(shape))),))


@st.composite
def matmul_cases(draw: st.DrawFn) -> OpCase:
    """(n,k)@(k,m), batched with broadcasting batch axes, and 1-d operands on either side."""
    n, k, m, b = (draw(st.integers(1, 3)) for _ in range(4))
    kind = draw(st.sampled_from(["2d", "batched", "broadcast", "vec_mat", "mat_vec", "dot"]))
    sa, sb = {
        "2d": ((n, k), (k, m)),
        "batched": ((b, n, k), (b, k, m)),
        "broadcast": ((1, n, k), (b, 1, k, m)),
        "vec_mat": ((k,), (b, k, m)),
        "mat_vec": ((b, n, k), (k,)),
        "dot": ((k,), (k,)),
    }[kind]
    return OpCase(ops.matmul, (_grad(draw(arrays(sa))), _grad(draw(arrays(sb)))))


# Every registered op name -> a zero-argument function returning a strategy of OpCases.
# tests/ops/test_registry.py fails when a built-in op has no entry here.
OP_CASES: dict[str, Callable[..., st.SearchStrategy[OpCase]]] = {
    "add": _binary(ops.add),
    "sub": _binary(ops.sub),
    "mul": _binary(ops.mul),
    "div": _binary(ops.div, away_from_zero(0.5, 2.0)),
    "neg": _unary(ops.neg),
    "pow": pow_cases,
    "rpow": rpow_cases,
    "exp": _unary(ops.exp),
    "log": _unary(ops.log, floats(0.5, 3.0)),
    "relu": _unary(ops.relu, away_from_zero(0.01, 2.0)),
    "tanh": _unary(ops.tanh),
    "sigmoid": _unary(ops.sigmoid, floats(-5.0, 5.0)),
    "sum": _reduction("sum", lambda s: arrays(s)),
    "mean": _reduction("mean", lambda s: arrays(s)),
    "max": _reduction("max", lambda s: distinct_arrays(s)),
    "reshape": reshape_cases,
    "transpose": transpose_cases,
    "getitem": getitem_cases,
    "matmul": matmul_cases,
}


def cases_for(name: str, **overrides: Any) -> st.SearchStrategy[OpCase]:
    """The OpCase strategy registered for op ``name``, built with ``overrides`` as keyword arguments."""
    if name not in OP_CASES:
        raise KeyError(f"no strategy for op {name!r}; add one to microgradcnn.testing.strategies.OP_CASES")
    return OP_CASES[name](**overrides)


