"""The graph: Tensor, Function, Context, REGISTRY, unbroadcast, toposort, backward, no_grad, anomalies."""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]

REGISTRY: dict[str, type[Function]] = {}  # op name -> Function; complete once microgradcnn.ops is imported

# Engine switches. Plain module globals rather than thread-locals: reading one costs a dict lookup, and the
# per-op overhead of the engine is a product feature (benchmarks/bench_train.py).
_GRAD_ENABLED = True
_ANOMALY = False
# The stack of nn.Modules whose forward is running, innermost last; each recorded op keeps the tuple current
# at its creation so the graph renderer can draw module clusters. Tuples are immutable, so recording one is
# a pointer copy.
_SCOPE: tuple[Any, ...] = ()


class Context:
    """What one op invocation remembers: its Function, input tensors, attributes and saved arrays."""

    __slots__ = ("attrs", "fn", "parents", "released", "saved_tensors", "scope")

    def __init__(self, fn: type[Function], parents: tuple[Tensor, ...], attrs: dict[str, Any]) -> None:
        self.fn = fn
        self.parents = parents
        self.attrs = attrs
        self.saved_tensors: tuple[Any, ...] = ()
        self.released = False
        self.scope = _SCOPE

    def save_for_backward(self, *arrays: Any) -> None:
        """Keep arrays (or small Python values) for ``backward``; freed after backward unless retained."""
        self.saved_tensors = arrays


class Function:
    """Base of every differentiable op: ``forward`` on arrays, ``backward`` returns one gradient per input.

    Subclass it, set ``name``, and write two static methods::

        class Square(Function):
            name = "square"

            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x)
                return x * x

            @staticmethod
            def backward(ctx, grad):
                (x,) = ctx.saved_tensors
                return (2 * x * grad,)

    ``Square.apply(t)`` runs it on tensors. Positional inputs are the tensors that may get gradients; keyword
    attributes are everything else (stride, labels) and are recorded for rendering. ``backward`` returns one
    array or ``None`` per positional input, of the input's shape or a shape that broadcasts to the output's:
    the engine reduces broadcast gradients, never the op. ``backward`` must not modify ``grad`` in place.

    Defining a subclass registers it in ``REGISTRY`` under ``name``; another class with a taken name raises
    ``ValueError`` (re-running the same class definition, as in a notebook, replaces it). Pass
    ``register=False`` in the class statement for a private, unregistered op.
    """

    name: ClassVar[str]

    def __init_subclass__(cls, register: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not isinstance(cls.__dict__.get("name"), str) or not cls.__dict__["name"]:
            raise TypeError(f"Function subclass {cls.__qualname__} must set a class attribute name = '...'")
        if not register:
            return
        taken = REGISTRY.get(cls.name)
        if taken is not None and (taken.__module__, taken.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"op name {cls.name!r} is taken by {taken.__module__}.{taken.__qualname__}")
        REGISTRY[cls.name] = cls

    @staticmethod
    def forward(ctx: Context, *args: Any, **kwargs: Any) -> Array:  # Any: subclasses narrow it
        """Compute the output array from the inputs' arrays."""
        raise NotImplementedError

    @staticmethod
    def backward(ctx: Context, *args: Any, **kwargs: Any) -> Any:
        """Map the output's gradient to a tuple with one gradient (or ``None``) per positional input."""
        raise NotImplementedError

    @classmethod
    def call(cls, *inputs: Any, **attrs: Any) -> Any:
        """The op on Tensors, recorded as ``apply`` records it; on arrays alone, its forward kernel only.

        This is how a backward rule uses other ops and stays one rule for both orders: in an ordinary
        backward its operands are arrays and only the kernel runs; when a backward is itself being recorded
        (``create_graph``) they are Tensors and the op is recorded, so it can be differentiated again.
        """
        for t in inputs:
            if isinstance(t, Tensor):
                return cls.apply(*inputs, **attrs)
        return cls.forward(_KERNEL_ONLY, *inputs, **attrs)

    @classmethod
    def apply(cls, *inputs: Any, **attrs: Any) -> Tensor:
        """Run ``forward`` on the inputs' arrays and record the graph edge if any input needs grad.

        Non-tensor inputs (arrays, numbers) are wrapped as constants.
        """
        parents = inputs
        for t in inputs:  # a plain loop: this runs for every op, and generator expressions cost ~1 us each
            if not isinstance(t, Tensor):
                parents = tuple(p if isinstance(p, Tensor) else Tensor(p) for p in inputs)
                break
        ctx = Context(cls, parents, attrs)
        try:
            # Unrolled for the common arities: a generator or list comprehension costs ~1 us per op here.
            if len(parents) == 1:
                data = cls.forward(ctx, parents[0].data, **attrs)
            elif len(parents) == 2:
                data = cls.forward(ctx, parents[0].data, parents[1].data, **attrs)
            elif len(parents) == 3:  # x, weight, bias
                data = cls.forward(ctx, parents[0].data, parents[1].data, parents[2].data, **attrs)
            else:
                data = cls.forward(ctx, *[t.data for t in parents], **attrs)
        except ValueError as err:  # NumPy's broadcast/shape errors don't say which op or shapes
            shapes = ", ".join(str(t.shape) for t in parents)
            text = str(err).removeprefix(f"{cls.name}: ")  # an op's own message may name it already
            raise ValueError(f"{cls.name}: {text} (input shapes {shapes})") from None
        if _ANOMALY:
            _check_finite(data, f"{cls.name} forward", parents)
        out = Tensor.__new__(Tensor)
        out.data = data if isinstance(data, np.ndarray) else np.asarray(data)
        out.grad = None
        out._retains_grad = False
        out.requires_grad = False
        out._ctx = None
        if _GRAD_ENABLED:
            for t in parents:
                if t.requires_grad:
                    out.requires_grad = True
                    out._ctx = ctx
                    break
        return out


class _KernelOnly:
    """The context a forward gets when it runs as a bare kernel (``Function.call`` on arrays): it keeps
    nothing, since no backward will follow."""

    __slots__ = ()
    needs_input_grad: tuple[bool, ...] = ()

    def save_for_backward(self, *arrays: Any) -> None:
        pass


_KERNEL_ONLY: Any = _KernelOnly()


def _check_finite(array: Array, where: str, parents: Sequence[Tensor]) -> None:
    if not np.isfinite(array).all():
        shapes = ", ".join(str(t.shape) for t in parents)
        raise RuntimeError(f"detect_anomaly: {where} produced NaN or inf (input shapes {shapes})")


def unbroadcast(grad: Array, shape: tuple[int, ...]) -> Array:
    """Sum ``grad`` over the axes NumPy broadcasting added or stretched, giving an array of ``shape``.

    Raises:
        ValueError: if ``grad``'s shape does not broadcast from ``shape``.
    """
    if grad.shape == shape:
        return grad
    lead = grad.ndim - len(shape)
    if lead < 0:
        raise ValueError(f"unbroadcast: gradient {grad.shape} cannot reduce to {shape}")
    stretched = tuple(i + lead for i, s in enumerate(shape) if s == 1 and grad.shape[i + lead] != 1)
    axes = tuple(range(lead)) + stretched
    reduced = grad.sum(axis=axes, keepdims=True) if axes else grad
    if reduced.shape[lead:] != shape:
        raise ValueError(f"unbroadcast: gradient {grad.shape} cannot reduce to {shape}")
    return reduced.reshape(shape)


def toposort(root: Tensor) -> list[Tensor]:
    """Tensors that ``root`` depends on and that require grad, inputs before outputs.

    An explicit stack instead of recursion: a chain of 100,000 ops must not overflow Python's stack.
    """
    # Tensors hash by identity, so they key sets and dicts directly (no id() calls on this hot path).
    order: list[Tensor] = []
    visited: set[Tensor] = set()
    stack: list[tuple[Tensor, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
        elif node not in visited:
            visited.add(node)
            stack.append((node, True))
            ctx = node._ctx
            if ctx is not None:
                for p in ctx.parents:
                    if p.requires_grad and p not in visited:
                        stack.append((p, False))
    return order


class Tensor:
    """An n-dimensional float array that records the ops applied to it, for reverse-mode autodiff.

    A float32 or float64 array keeps its dtype and is shared, not copied; Python numbers, lists and
    integer/bool arrays become float32. ``grad`` holds d(root)/d(self) after ``root.backward()``.

    >>> x = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    >>> (x * x).sum().backward()
    >>> x.grad
    array([2., 4., 6.], dtype=float32)
    """

    __slots__ = ("__weakref__", "_ctx", "_retains_grad", "data", "grad", "requires_grad")
    __array_ufunc__ = None  # make `ndarray + Tensor` defer to Tensor.__radd__ instead of looping elementwise
    __hash__ = object.__hash__  # hashable by identity although == compares elementwise

    def __init__(self, data: Any, requires_grad: bool = False) -> None:
        self.data: Array = _as_float_array(data)
        self.grad: Array | None = None
        self.requires_grad = bool(requires_grad)
        self._ctx: Context | None = None
        self._retains_grad = False

    # ---- attributes -------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape."""
        return self.data.shape

    @property
    def ndim(self) -> int:
        """Number of axes."""
        return self.data.ndim

    @property
    def dtype(self) -> np.dtype[Any]:
        """float32 or float64."""
        return self.data.dtype

    @property
    def size(self) -> int:
        """Number of elements."""
        return self.data.size

    @property
    def op(self) -> str | None:
        """Name of the op that made this tensor, or None for a leaf."""
        return None if self._ctx is None else self._ctx.fn.name

    @property
    def is_leaf(self) -> bool:
        """True for tensors made by the user rather than by an op that recorded a graph edge."""
        return self._ctx is None

    def __len__(self) -> int:
        return len(self.data)

    def __bool__(self) -> bool:
        """The truth of a one-element tensor's value (``bool(Tensor([0.0]))`` is False), as in PyTorch.

        Raises:
            ValueError: for a tensor of several or no elements, whose truth is ambiguous (as in NumPy).
        """
        if self.data.size != 1:
            raise ValueError(
                f"bool: the truth value of a tensor with {self.data.size} elements is ambiguous (shape "
                f"{self.shape}); use (t != 0).any() or (t != 0).all()"
            )
        return bool(self.data.reshape(()))

    def item(self) -> float:
        """The value of a one-element tensor as a Python float."""
        if self.data.size != 1:
            raise ValueError(f"item: only a one-element tensor converts to a number, shape is {self.shape}")
        return float(self.data.reshape(()))

    def numpy(self) -> Array:
        """The underlying array (shared, not copied)."""
        return self.data

    def detach(self) -> Tensor:
        """A new leaf sharing this tensor's data, cut from the graph."""
        return Tensor(self.data)

    def retain_grad(self) -> Tensor:
        """Keep ``.grad`` on this intermediate tensor after backward (leaves always keep theirs)."""
        self._retains_grad = True
        return self

    def __repr__(self) -> str:
        body = np.array2string(self.data, separator=", ", prefix="Tensor(", precision=4, threshold=50)
        extra = f", dtype={self.dtype}"
        if self._ctx is not None:
            extra += f", grad_fn=<{self._ctx.fn.name}>"
        elif self.requires_grad:
            extra += ", requires_grad=True"
        return f"Tensor({body}{extra})"

    # ---- autodiff ---------------------------------------------------------------------------------------
    def backward(self, grad: Any = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(t) into ``t.grad`` for every leaf ``t`` (and retained tensor) behind self.

        Args:
            grad: the gradient of some scalar w.r.t. self, of self's shape; may be omitted (seeded with 1)
                only when self has one element.
            retain_graph: keep the saved arrays so that backward can run through this graph again.

        Raises:
            RuntimeError: self does not require grad, ``grad`` is missing for a tensor of more than one
                element, or the graph was already released by an earlier backward.
            ValueError: ``grad`` does not have self's shape.
        """
        if not self.requires_grad:
            raise RuntimeError("backward: tensor does not require grad and has no graph (made in no_grad?)")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward: grad can be implicit only for a one-element tensor, shape is {self.shape}"
                )
            # np.empty + fill are C calls; np.ones_like runs four Python functions, each a few us when the
            # interpreter's caches are cold after a large forward kernel (docs/benchmarks.md, graph overhead).
            seed = np.empty(self.data.shape, self.data.dtype)
            seed.fill(1)
        else:
            seed = np.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=self.dtype)
            if seed.shape != self.shape:
                raise ValueError(f"backward: grad of shape {seed.shape} for a tensor of shape {self.shape}")
        grads: dict[Tensor, Array] = {self: seed}
        # One loop with each op's step written inline rather than in a helper: at large batches every op's
        # backward kernel evicts the interpreter's caches, and each distinct Python function run after it
        # costs ~4 us cold (docs/benchmarks.md, graph overhead).
        for node in reversed(toposort(self)):
            g = grads.pop(node, None)
            if g is None:  # every path to it returned None
                continue
            ctx = node._ctx
            if ctx is None or node._retains_grad:
                # Copy on first store: g may be a read-only broadcast view or an array the caller owns.
                if node.grad is not None:
                    node.grad = node.grad + g
                else:
                    node.grad = g.copy() if g.dtype == node.data.dtype else g.astype(node.data.dtype)
            if ctx is None:
                continue
            fn, parents = ctx.fn, ctx.parents
            if ctx.released:
                raise RuntimeError(
                    f"backward: trying to go through the graph a second time (op {fn.name!r}); its saved "
                    "arrays were freed after the first backward. Pass retain_graph=True to the first "
                    "backward call."
                )
            in_grads = fn.backward(ctx, g)
            if not isinstance(in_grads, tuple):
                in_grads = (in_grads,)
            if len(in_grads) != len(parents):
                msg = f"{fn.name}.backward returned {len(in_grads)} gradients for {len(parents)} inputs"
                raise RuntimeError(msg)
            for i, parent in enumerate(parents):
                pg = in_grads[i]
                if pg is None or not parent.requires_grad:
                    continue
                data = parent.data
                if pg.shape != data.shape or pg.dtype != data.dtype:
                    pg = _fit_gradient(pg, parent, fn.name, i)
                if _ANOMALY:
                    _check_finite(pg, f"{fn.name} backward (gradient of input {i})", parents)
                prev = grads.get(parent)
                grads[parent] = pg if prev is None else prev + pg
            if not retain_graph:
                ctx.saved_tensors = ()
                ctx.released = True

    # ---- operators --------------------------------------------------------------------------------------
    def __add__(self, other: Any) -> Tensor:
        return ops.add(self, other)

    def __radd__(self, other: Any) -> Tensor:
        return ops.add(other, self)

    def __sub__(self, other: Any) -> Tensor:
        return ops.sub(self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return ops.sub(other, self)

    def __mul__(self, other: Any) -> Tensor:
        return ops.mul(self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return ops.mul(other, self)

    def __truediv__(self, other: Any) -> Tensor:
        return ops.div(self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return ops.div(other, self)

    def __neg__(self) -> Tensor:
        return ops.neg(self)

    def __pow__(self, exponent: Any) -> Tensor:
        return ops.pow(self, exponent)

    def __rpow__(self, base: Any) -> Tensor:
        return ops.pow(base, self)

    def __matmul__(self, other: Any) -> Tensor:
        return ops.matmul(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return ops.matmul(other, self)

    def __getitem__(self, index: Any) -> Tensor:
        return ops.getitem(self, index)

    # Comparisons give plain boolean arrays: they have no gradient, so they record no graph.
    def __lt__(self, other: Any) -> Any:
        return self.data < _raw(other)

    def __le__(self, other: Any) -> Any:
        return self.data <= _raw(other)

    def __gt__(self, other: Any) -> Any:
        return self.data > _raw(other)

    def __ge__(self, other: Any) -> Any:
        return self.data >= _raw(other)

    def __eq__(self, other: Any) -> Any:  # type: ignore[override]
        return self.data == _raw(other)

    def __ne__(self, other: Any) -> Any:  # type: ignore[override]
        return self.data != _raw(other)

    # ---- methods (thin: the ops live in microgradcnn.ops) -----------------------------------------------
    def sum(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        """Sum over ``axis`` (None: all), as ``numpy.sum``."""
        return ops.sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        """Mean over ``axis`` (None: all), as ``numpy.mean``."""
        return ops.mean(self, axis=axis, keepdims=keepdims)

    def max(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        """Maximum over ``axis`` (None: all). At ties the gradient is split evenly for ``axis=None``, and goes
        to each slice's first maximum (row-major) for an explicit axis: ``torch.max(x)``, ``max(x, dim)``."""
        return ops.max(self, axis=axis, keepdims=keepdims)

    def exp(self) -> Tensor:
        """Elementwise e**x."""
        return ops.exp(self)

    def log(self) -> Tensor:
        """Elementwise natural logarithm."""
        return ops.log(self)

    def relu(self) -> Tensor:
        """Elementwise max(x, 0)."""
        return ops.relu(self)

    def tanh(self) -> Tensor:
        """Elementwise hyperbolic tangent."""
        return ops.tanh(self)

    def sigmoid(self) -> Tensor:
        """Elementwise 1 / (1 + e**-x), computed without overflow."""
        return ops.sigmoid(self)

    def reshape(self, *shape: Any) -> Tensor:
        """The same elements in a new shape; one axis may be -1. Takes ints or one tuple."""
        return ops.reshape(self, shape[0] if len(shape) == 1 and not isinstance(shape[0], int) else shape)

    def transpose(self, *axes: Any) -> Tensor:
        """Permute the axes (reversed when none are given). Takes ints or one tuple."""
        if len(axes) == 1 and not isinstance(axes[0], int):
            return ops.transpose(self, axes[0])
        return ops.transpose(self, axes or None)

    @property
    def T(self) -> Tensor:
        """The axes reversed."""
        return ops.transpose(self, None)

    def flatten(self, start_axis: int = 0) -> Tensor:
        """Merge axes ``start_axis`` .. last into one: (N, C, H, W).flatten(1) -> (N, C*H*W)."""
        return ops.flatten(self, start_axis)

    def abs(self) -> Tensor:
        """Elementwise |x|; the gradient at 0 is 0, as in PyTorch."""
        return ops.abs(self)

    def sqrt(self) -> Tensor:
        """Elementwise square root; the gradient at 0 is inf, as in PyTorch."""
        return ops.sqrt(self)

    def clip(self, min: float | None = None, max: float | None = None) -> Tensor:
        """Elementwise limit to ``[min, max]`` (either may be None), as ``torch.clamp``; the gradient passes
        where ``min <= x <= max``, bounds included."""
        return ops.clip(self, min, max)

    def squeeze(self, axis: int | tuple[int, ...] | None = None) -> Tensor:
        """Drop size-1 axes: all (None) or those among ``axis``; a named axis of another size stays."""
        return ops.squeeze(self, axis)

    def unsqueeze(self, axis: int) -> Tensor:
        """Insert a size-1 axis at ``axis`` (in ``[-ndim - 1, ndim]``)."""
        return ops.unsqueeze(self, axis)

    def permute(self, *axes: Any) -> Tensor:
        """Reorder the axes, as ``torch.permute``: ``x.permute(2, 0, 1)``. Takes ints or one tuple."""
        return ops.permute(self, axes[0] if len(axes) == 1 and isinstance(axes[0], tuple | list) else axes)

    def expand(self, *shape: Any) -> Tensor:
        """Broadcast to ``shape`` as ``torch.Tensor.expand`` (-1 keeps a size). Takes ints or one tuple."""
        return ops.expand(self, shape[0] if len(shape) == 1 and isinstance(shape[0], tuple | list) else shape)

    def flip(self, axis: int | tuple[int, ...] | None = None) -> Tensor:
        """Reverse the order of the elements along ``axis`` (None: every axis)."""
        return ops.flip(self, axis)

    def logsumexp(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        """``log(sum(exp(x)))`` over ``axis`` (None: all), without overflow."""
        return ops.logsumexp(self, axis=axis, keepdims=keepdims)

    def var(self, axis: int | tuple[int, ...] | None = None, ddof: int = 0, keepdims: bool = False) -> Tensor:
        """Variance over ``axis`` (None: all) with divisor ``n - ddof``, as ``numpy.var``."""
        return ops.var(self, axis=axis, ddof=ddof, keepdims=keepdims)

    def std(self, axis: int | tuple[int, ...] | None = None, ddof: int = 0, keepdims: bool = False) -> Tensor:
        """Standard deviation over ``axis`` (None: all) with divisor ``n - ddof``, as ``numpy.std``."""
        return ops.std(self, axis=axis, ddof=ddof, keepdims=keepdims)

    def min(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        """Minimum over ``axis`` (None: all), with ``max``'s tie rules (``-max(-x)``)."""
        return ops.min(self, axis=axis, keepdims=keepdims)

    def argmax(self, axis: int | None = None, keepdims: bool = False) -> Array:
        """Index of the (first) maximum along ``axis`` (None: of the flattened data), as ``numpy.argmax``.
        Data, not an op: a plain integer ndarray with no gradient."""
        return ops.argmax(self, axis=axis, keepdims=keepdims)


def _fit_gradient(g: Array, parent: Tensor, op: str, i: int) -> Array:
    """``g``, the gradient an op's backward gave for input ``i``, reduced to ``parent``'s shape and cast to
    its dtype (a broadcast input's gradient is summed; a float32 weight in a float64 expression gets float32).

    Raises:
        RuntimeError: naming the op, when ``g``'s shape does not broadcast to the input's.
    """
    if g.shape != parent.data.shape:
        try:
            g = unbroadcast(g, parent.data.shape)
        except ValueError:
            msg = f"{op}.backward: gradient {g.shape} for input {i} of shape {parent.shape}"
            raise RuntimeError(msg) from None
    if g.dtype != parent.data.dtype:
        g = g.astype(parent.data.dtype)
    return g


def _as_float_array(data: Any) -> Array:
    """float32/float64 arrays as they are; numbers, lists and int/bool arrays as float32."""
    if isinstance(data, Tensor):
        return data.data
    if isinstance(data, np.ndarray | np.generic):
        arr = np.asarray(data)
        if arr.dtype in (np.float32, np.float64):
            return arr
        if arr.dtype.kind in "biuf":
            return arr.astype(np.float32)
        raise TypeError(f"Tensor: cannot hold an array of dtype {arr.dtype}; want a float, int or bool array")
    if isinstance(data, bool | numbers.Real):
        return np.asarray(data, dtype=np.float32)
    if isinstance(data, list | tuple):
        try:
            arr = np.asarray(data)
        except ValueError as err:
            raise ValueError(f"Tensor: ragged or malformed nested sequence ({err})") from None
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"Tensor: data must be numeric, got a sequence of dtype {arr.dtype}")
        return arr.astype(np.float32)
    raise TypeError(f"Tensor: cannot make a tensor from {type(data).__name__}")


def _raw(x: Any) -> Any:
    return x.data if isinstance(x, Tensor) else x


def lift(x: Any, like: Tensor) -> Tensor:
    """``x`` as a Tensor; a Python number takes ``like``'s dtype (NumPy 2: Python scalars never upcast)."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, bool | numbers.Real) and not isinstance(x, np.generic):
        return Tensor(np.asarray(x, dtype=like.data.dtype))
    return Tensor(x)


class no_grad(contextlib.ContextDecorator):
    """Record no graph inside the block (or the decorated function): for inference and optimizer steps."""

    def __enter__(self) -> no_grad:
        global _GRAD_ENABLED
        self._prev = _GRAD_ENABLED
        _GRAD_ENABLED = False
        return self

    def __exit__(self, *exc: object) -> None:
        global _GRAD_ENABLED
        _GRAD_ENABLED = self._prev


def is_grad_enabled() -> bool:
    """False inside ``no_grad``."""
    return _GRAD_ENABLED


class detect_anomaly(contextlib.ContextDecorator):
    """Raise ``RuntimeError`` at the first op whose forward or backward makes NaN or inf, naming it."""

    def __enter__(self) -> detect_anomaly:
        global _ANOMALY
        self._prev = _ANOMALY
        _ANOMALY = True
        return self

    def __exit__(self, *exc: object) -> None:
        global _ANOMALY
        _ANOMALY = self._prev


class scope:
    """Record ``owner`` (an nn.Module) as running around the ops made inside, for graph clusters.

    A class rather than a ``contextlib.contextmanager`` generator: it runs on every module call, and the
    generator machinery cost ~4 us per call against ~1.5 us for this (benchmarks/bench_viz.py).
    """

    __slots__ = ("owner", "prev")

    def __init__(self, owner: Any) -> None:
        self.owner = owner

    def __enter__(self) -> None:
        global _SCOPE
        self.prev = _SCOPE
        _SCOPE = (*self.prev, self.owner)

    def __exit__(self, *exc: object) -> None:
        global _SCOPE
        _SCOPE = self.prev


# Tensor's operator methods call the ops, and the ops are Functions defined on top of this module: the one
# import cycle the package allows, closed here at the bottom (early tinygrad's pattern).
from microgradcnn import ops  # noqa: E402
