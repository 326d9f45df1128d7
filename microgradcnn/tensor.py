"""The graph: Tensor, Function, Context, REGISTRY, the backward engine, grad, no_grad, anomalies, scopes."""

from __future__ import annotations

import contextlib
import itertools
import numbers
import operator
import threading
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]

REGISTRY: dict[str, type[Function]] = {}  # op name -> Function; complete once microgradcnn.ops is imported


class _Mode:
    """One thread's engine switches: grad mode, anomaly mode, and the stack of nn.Modules whose forward is
    running (innermost last; each recorded op keeps the tuple current at its creation, so the graph renderer
    can draw module clusters; tuples are immutable, so recording one is a pointer copy)."""

    __slots__ = ("anomaly", "grad_enabled", "scope")

    def __init__(self) -> None:
        self.grad_enabled = True
        self.anomaly = False
        self.scope: tuple[Any, ...] = ()


class _Local(threading.local):
    """Per-thread engine state, as PyTorch's grad mode is: one thread's ``no_grad`` never switches off
    recording in another. ``Function.apply`` reads ``_LOCAL.mode`` once; the rest are plain slot reads."""

    def __init__(self) -> None:
        self.mode = _Mode()


_LOCAL = _Local()
_DATA = operator.attrgetter("data")
_REQUIRES_GRAD = operator.attrgetter("requires_grad")


class Context:
    """What one op invocation remembers: its Function, input tensors, attributes and saved arrays.

    ``needs_input_grad`` holds one bool per positional input: whether backward must compute its gradient
    (all False when no graph is recorded). Ops read it, and only it, to skip work for constant inputs.
    """

    __slots__ = ("attrs", "fn", "needs_input_grad", "parents", "saved_tensors", "scope", "snapshots")

    def __init__(
        self,
        fn: type[Function],
        parents: tuple[Tensor, ...],
        attrs: dict[str, Any],
        needs_input_grad: tuple[bool, ...] | None = None,
        scope: tuple[Any, ...] | None = None,
    ) -> None:
        self.fn = fn
        self.parents = parents
        self.attrs = attrs
        # defaults for a Context made by hand (tests of one op's kernels); apply passes both
        needs = tuple(map(_REQUIRES_GRAD, parents)) if needs_input_grad is None else needs_input_grad
        self.needs_input_grad = needs
        self.scope = _LOCAL.mode.scope if scope is None else scope
        self.saved_tensors: tuple[Any, ...] = ()
        self.snapshots: tuple[Any, ...] = ()  # the saved arrays' fingerprints (_snapshots), or _RELEASED

    @property
    def released(self) -> bool:
        """True once ``release`` freed the saved arrays."""
        return self.snapshots is _RELEASED

    def save_for_backward(self, *arrays: Any) -> None:
        """Keep arrays (or small Python values) for ``backward``; freed after backward unless retained.

        Save the op's input and output arrays themselves, not arrays derived from them that carry a
        derivative: under ``create_graph`` the engine hands backward the Tensors in their place, and an
        in-place edit of one of them before backward is detected.
        """
        self.saved_tensors = arrays

    def release(self) -> None:
        """Free the saved arrays (after a backward that does not retain the graph)."""
        self.saved_tensors = ()
        self.snapshots = _RELEASED


_RELEASED: tuple[Any, ...] = (None,)  # a Context's snapshots once released: non-empty, so backward checks it


class Function:
    """Base of every differentiable op: ``forward`` on arrays, ``backward`` returns one gradient per input.

    Subclass it, set ``name``, and write two static methods::

        class Square(Function):
            name = "square"
            differentiable_backward = True  # backward is made of ops: it can be differentiated again

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
    ``ctx.needs_input_grad[i]`` says whether input ``i``'s gradient is wanted (return ``None`` if not).

    In an ordinary backward, ``grad`` and the saved values are arrays. Under ``create_graph`` (``grad``)
    the engine calls the same backward with ``grad`` a Tensor and every saved input or output array
    replaced by its Tensor, so a backward written with operators and ``SomeFn.call`` is recorded and can be
    differentiated again; set ``differentiable_backward = True`` to say so (and prove it with
    ``microgradcnn.testing.gradgradcheck``). An op that leaves it False is refused under ``create_graph``.

    Defining a subclass registers it in ``REGISTRY`` under ``name``; another class with a taken name raises
    ``ValueError`` (re-running the same class definition, as in a notebook, replaces it). Pass
    ``register=False`` in the class statement for a private, unregistered op.
    """

    name: ClassVar[str]
    differentiable_backward: ClassVar[bool] = False

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
        return cls.forward(_KERNEL_ONLY[len(inputs)], *inputs, **attrs)

    @classmethod
    def apply(cls, *inputs: Any, **attrs: Any) -> Tensor:
        """Run ``forward`` on the inputs' arrays and record the graph edge if any input needs grad.

        Non-tensor inputs (arrays, numbers) are wrapped as constants.
        """
        parents = inputs
        for t in inputs:
            if not isinstance(t, Tensor):
                parents = tuple(p if isinstance(p, Tensor) else Tensor(p) for p in inputs)
                break
        mode = _LOCAL.mode
        needs = tuple(map(_REQUIRES_GRAD, parents)) if mode.grad_enabled else ()
        record = True in needs
        # Nothing to record (no_grad, or only constant inputs): the forward runs as a bare kernel, as in call
        ctx = Context(cls, parents, attrs, needs, mode.scope) if record else _KERNEL_ONLY[len(parents)]
        arrays = tuple(map(_DATA, parents))
        try:
            data = cls.forward(ctx, *arrays, **attrs)
        except ValueError as err:  # NumPy's broadcast/shape errors don't say which op or shapes
            shapes = ", ".join(str(t.shape) for t in parents)
            text = str(err).removeprefix(f"{cls.name}: ")  # an op's own message may name it already
            raise ValueError(f"{cls.name}: {text} (input shapes {shapes})") from None
        if mode.anomaly:
            _check_finite(data, f"{cls.name} forward", parents)
        if not isinstance(data, np.ndarray):
            data = _output_array(ctx, data)
        out = Tensor.__new__(Tensor)
        out.data = data
        out.grad = None
        out._retains_grad = False
        out._hooks = None
        out.requires_grad = record
        out._ctx = ctx if record else None
        if record and ctx.saved_tensors:
            ctx.snapshots = _snapshots(ctx.saved_tensors, arrays, data)
        return out


def _output_array(ctx: Context, value: Any) -> Array:
    """A forward's non-array result (NumPy gives scalars for 0-d operands) as an array, which also takes its
    place among the saved values: a saved output must be the output array itself."""
    data = np.asarray(value)
    if ctx.saved_tensors:
        ctx.saved_tensors = tuple(data if v is value else v for v in ctx.saved_tensors)
    return data


class _KernelOnly:
    """The context a forward gets when it runs as a bare kernel (``Function.call`` on arrays, or ``apply``
    with nothing to record): it keeps nothing and needs no gradient, since no backward will follow."""

    __slots__ = ("needs_input_grad",)
    saved_tensors: tuple[Any, ...] = ()

    def __init__(self, n_inputs: int) -> None:
        self.needs_input_grad = (False,) * n_inputs

    def save_for_backward(self, *arrays: Any) -> None:
        pass


class _KernelContexts(dict[int, _KernelOnly]):
    """One shared bare-kernel context per number of inputs, made on first use (it holds no state)."""

    def __missing__(self, n_inputs: int) -> _KernelOnly:
        ctx = self[n_inputs] = _KernelOnly(n_inputs)
        return ctx


_KERNEL_ONLY: Any = _KernelContexts()


def _check_finite(array: Any, where: str, parents: Sequence[Tensor]) -> None:
    if not np.isfinite(_raw(array)).all():
        shapes = ", ".join(str(t.shape) for t in parents)
        raise RuntimeError(f"detect_anomaly: {where} produced NaN or inf (input shapes {shapes})")


# ---- in-place edits of saved arrays ----------------------------------------------------------------------
# NumPy arrays have no version counter, and ``x.data[:] = 0`` cannot be intercepted, so each saved input or
# output array gets a fingerprint when the op is recorded, compared when backward reaches the op. It must cost
# next to nothing (it runs twice per saved array per step): a small array's fingerprint is a copy of its
# bytes, which catches every edit; a larger one's is a copy of _SAMPLES evenly spaced elements, which catches
# every edit of the whole array (an assignment through ``.data``, an optimizer step) but may miss an edit of a
# few elements between the samples. The elements are read through a view built once, at recording, so each
# fingerprint is one ``tobytes`` call.
_COPIED_BYTES = 1 << 12
_SAMPLES = 64


def _sampled(a: Array) -> Array:
    """The view of ``a`` whose bytes are its fingerprint: ``a`` itself if small, else every k-th element."""
    if a.nbytes <= _COPIED_BYTES:
        return a
    flat = a.ravel(order="K")  # a view for any contiguous layout (a conv output is stored channels-first)
    if flat.base is None:  # a copy (a strided array): fingerprint all of it, since a copy would not change
        return a
    return flat[:: flat.size // _SAMPLES]


def _snapshots(saved: tuple[Any, ...], inputs: tuple[Array, ...], out: Array) -> tuple[Any, ...]:
    """(sampled view, its fingerprint, array, input index: len(inputs) for the output) per saved input or
    output; what backward compares (``_check_saved``)."""
    ids = [*map(id, inputs), id(out)]  # ints: ``in`` on arrays would compare them elementwise
    marks = []
    for v in saved:
        if id(v) in ids:  # a saved input or output: live objects have distinct ids
            view = v if v.nbytes <= _COPIED_BYTES else _sampled(v)
            marks.append((view, view.tobytes(), v, ids.index(id(v))))
    return tuple(marks)


def _check_saved(ctx: Context) -> None:
    """Raise RuntimeError naming the op if its saved arrays were freed, or the input (or output) whose saved
    array was edited in place since the op was recorded."""
    if ctx.snapshots is _RELEASED:
        raise RuntimeError(
            f"backward: trying to go through the graph a second time (op {ctx.fn.name!r}); its saved arrays "
            "were freed after the first backward. Pass retain_graph=True to the first backward call."
        )
    for view, before, array, i in ctx.snapshots:
        if view.tobytes() != before:  # bytes: NaN compares equal to itself
            what = "its output" if i == len(ctx.parents) else f"input {i} (shape {array.shape})"
            raise RuntimeError(
                f"backward: {what} of op {ctx.fn.name!r} was modified in place after the op saved it for "
                "backward (e.g. through .data or an optimizer step), so its gradient would be wrong; "
                "compute the forward again after the edit, or edit a copy"
            )


def unbroadcast(grad: Any, shape: tuple[int, ...]) -> Any:
    """Sum ``grad`` over the axes NumPy broadcasting added or stretched, giving an array of ``shape``.

    Works on arrays and (for ``create_graph``) on Tensors, with the same sum and reshape.

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


def toposort(root: Tensor | Sequence[Tensor]) -> list[Tensor]:
    """Tensors that ``root`` (one Tensor or several) depends on and that require grad, inputs first.

    An explicit stack instead of recursion: a chain of 100,000 ops must not overflow Python's stack.
    """
    # Tensors hash by identity, so they key sets and dicts directly (no id() calls on this hot path).
    order: list[Tensor] = []
    visited: set[Tensor] = set()
    stack: list[tuple[Tensor, bool]] = [(r, False) for r in ([root] if isinstance(root, Tensor) else root)]
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


# ---- the backward engine ---------------------------------------------------------------------------------


def _backprop(roots: Sequence[Tensor], seeds: Sequence[Any], retain_graph: bool, create_graph: bool,
              wanted: set[Tensor] | None = None) -> dict[Tensor, Any]:
    """Run the ops' backward rules from ``roots`` (seeded with ``seeds``) down the graph, outputs first.

    With ``wanted`` None (``Tensor.backward``) gradients accumulate into ``.grad`` of leaves and retained
    tensors; otherwise (``grad``) only the ops between the roots and ``wanted`` run, and the gradients of
    the wanted tensors are returned instead. Under ``create_graph`` the gradients are Tensors whose own
    graph is recorded (grad mode on); otherwise they are arrays and only kernels run.
    """
    order = toposort(roots)
    runs = None  # the nodes whose backward must run: all of them, unless only some gradients are wanted
    if wanted is not None:
        order, runs = _between(order, wanted)
    grads: dict[Tensor, Any] = {}
    for root, seed in zip(roots, seeds, strict=True):
        grads[root] = seed if root not in grads else grads[root] + seed
    found: dict[Tensor, Any] = {}
    mode = _LOCAL.mode
    anomaly = mode.anomaly
    grad_was_enabled, mode.grad_enabled = mode.grad_enabled, create_graph
    try:
        for node in reversed(order):
            g = grads.pop(node, None)
            if g is None:  # every path to it returned None
                continue
            if node._hooks:  # None or {} unless register_hook was called
                g = _run_hooks(node, g, create_graph)
            ctx = node._ctx
            if wanted is not None:
                if node in wanted:
                    found[node] = g
            elif ctx is None or node._retains_grad:  # into .grad; copied on first store, since g may be
                # a read-only broadcast view or an array the caller (or a hook) owns
                prev = node.grad
                node.grad = g.astype(node.data.dtype) if prev is None else prev + g
            if ctx is None or (runs is not None and node not in runs):
                continue
            # the op's backward, once its saved arrays are checked to be there and unedited
            if ctx.snapshots:  # fingerprints, or _RELEASED
                _check_saved(ctx)
            fn, parents = ctx.fn, ctx.parents
            in_grads = _differentiable_backward(ctx, node, g) if create_graph else fn.backward(ctx, g)
            if not isinstance(in_grads, tuple):
                in_grads = (in_grads,)
            if len(in_grads) != len(parents):
                n = len(parents)
                raise RuntimeError(f"{fn.name}.backward returned {len(in_grads)} gradients for {n} inputs")
            for i, (parent, pg) in enumerate(zip(parents, in_grads, strict=True)):  # fitted, then added
                if pg is None or not parent.requires_grad:
                    continue
                if pg.shape != parent.data.shape or pg.dtype != parent.data.dtype:
                    pg = _fit_gradient(pg, parent, fn.name, i)
                if anomaly:
                    _check_finite(pg, f"{fn.name} backward (gradient of input {i})", parents)
                prev = grads.get(parent)
                grads[parent] = pg if prev is None else prev + pg
            if not retain_graph:
                ctx.release()
    finally:
        mode.grad_enabled = grad_was_enabled
    return found


def _run_hooks(node: Tensor, g: Any, create_graph: bool) -> Any:
    """``g`` passed through ``node``'s tensor hooks in registration order (see ``Tensor.register_hook``)."""
    for hook in list(node._hooks.values()):  # a copy: a hook may remove itself
        new = hook(g)
        if new is None:
            continue
        if create_graph:
            new = new if isinstance(new, Tensor) else Tensor(np.asarray(new, dtype=node.dtype))
        else:
            new = np.asarray(new.data if isinstance(new, Tensor) else new, dtype=node.dtype)
        if new.shape != node.shape:
            name = getattr(hook, "__qualname__", type(hook).__name__)
            raise RuntimeError(
                f"register_hook: hook {name!r} returned a gradient of shape {new.shape} for a tensor of "
                f"shape {node.shape}; a hook may replace the gradient only by one of the same shape"
            )
        g = new
    return g


def _differentiable_backward(ctx: Context, node: Tensor, g: Any) -> Any:
    """``ctx.fn.backward`` recorded as a graph: ``g`` a Tensor, and each saved input or output array (by
    identity) replaced by its Tensor for the call, so the gradients depend on them as they should."""
    fn = ctx.fn
    if not fn.differentiable_backward:
        raise RuntimeError(
            f"create_graph: op {fn.name!r} ({fn.__qualname__}) has a backward that cannot be "
            "differentiated (differentiable_backward is False). Write its backward with Tensor operators "
            "and SomeFn.call(...) instead of NumPy functions, set differentiable_backward = True on the "
            "class, and prove it with microgradcnn.testing.gradgradcheck"
        )
    tensors = {id(p.data): p for p in ctx.parents}
    tensors[id(node.data)] = node
    saved = ctx.saved_tensors
    ctx.saved_tensors = tuple(tensors.get(id(v), v) if type(v) is np.ndarray else v for v in saved)
    try:
        return fn.backward(ctx, g if isinstance(g, Tensor) else Tensor(g))
    finally:
        ctx.saved_tensors = saved


def _between(order: list[Tensor], wanted: set[Tensor]) -> tuple[list[Tensor], set[Tensor]]:
    """The tensors of ``order`` (inputs first) that are wanted or depend on a wanted one, and among them
    those whose op must run backward: the ones with such an input (a wanted tensor's own op need not)."""
    on_path: set[Tensor] = set()
    runs: set[Tensor] = set()
    for node in order:
        ctx = node._ctx
        if ctx is not None and any(p in on_path for p in ctx.parents):
            runs.add(node)
            on_path.add(node)
        elif node in wanted:
            on_path.add(node)
    return [node for node in order if node in on_path], runs


def _seed(output: Tensor, grad: Any, where: str, as_tensor: bool) -> Any:
    """The gradient that starts backward at ``output``: ``grad`` checked against its shape, or 1."""
    if not output.requires_grad:
        raise RuntimeError(f"{where}: tensor does not require grad and has no graph (made in no_grad?)")
    if grad is None:
        if output.data.size != 1:
            raise RuntimeError(
                f"{where}: grad can be implicit only for a one-element tensor, shape is {output.shape}"
            )
        seed = np.empty(output.data.shape, output.data.dtype)
        seed.fill(1)
    elif as_tensor and isinstance(grad, Tensor):
        seed = grad
    else:
        seed = np.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=output.dtype)
    if seed.shape != output.shape:
        raise ValueError(f"{where}: grad of shape {seed.shape} for a tensor of shape {output.shape}")
    return Tensor(seed) if as_tensor and not isinstance(seed, Tensor) else seed


def grad(
    outputs: Tensor | Sequence[Tensor],
    inputs: Tensor | Sequence[Tensor],
    grad_outputs: Any = None,
    *,
    retain_graph: bool | None = None,
    create_graph: bool = False,
    allow_unused: bool = False,
) -> tuple[Tensor | None, ...]:
    """The gradients of ``outputs`` with respect to ``inputs``, as ``torch.autograd.grad``; ``.grad`` stays.

    Args:
        outputs: one Tensor or a sequence; each is seeded with its entry of ``grad_outputs``.
        inputs: one Tensor or a sequence (leaves or intermediates of the graph).
        grad_outputs: None, or one seed per output (Tensor, array or None; None is 1 for a one-element
            output), of the output's shape: the vector of the vector-Jacobian product.
        retain_graph: keep the saved arrays for another backward; defaults to ``create_graph``.
        create_graph: record the backward computation, so the gradients are Tensors with a graph of their
            own that can be differentiated again, to any order. Without it they are constants.
        allow_unused: give None for an input the outputs do not depend on, instead of raising.

    Returns:
        One Tensor per input, of its shape (``requires_grad`` only with ``create_graph`` and a gradient
        that depends on something requiring grad).

    Raises:
        ValueError: naming the input's position, for an input the outputs do not depend on (unless
            ``allow_unused``); for a ``grad_outputs`` entry of the wrong shape or count.
        RuntimeError: for an output that does not require grad, an implicit seed for a non-scalar output,
            a released graph, an op whose saved array was edited in place, or, under ``create_graph``, an op
            whose backward is not differentiable.

    >>> x = Tensor([1.0, 2.0], requires_grad=True)
    >>> (g,) = grad((x ** 3).sum(), x, create_graph=True)   # 3 x**2
    >>> grad(g.sum(), x)[0].data                             # 6 x
    array([ 6., 12.], dtype=float32)
    """
    outs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    ins = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    seeds = [None] * len(outs) if grad_outputs is None else (
        [grad_outputs] if isinstance(grad_outputs, Tensor | np.ndarray) else list(grad_outputs))
    if len(seeds) != len(outs):
        raise ValueError(f"grad: {len(seeds)} grad_outputs for {len(outs)} outputs")
    for i, t in enumerate((*outs, *ins)):
        if not isinstance(t, Tensor):
            what = f"outputs[{i}]" if i < len(outs) else f"inputs[{i - len(outs)}]"
            raise TypeError(f"grad: {what} must be a Tensor, got {type(t).__name__}")
    seeds = [_seed(o, s, "grad", create_graph) for o, s in zip(outs, seeds, strict=True)]
    retain = create_graph if retain_graph is None else retain_graph
    found = _backprop(outs, seeds, retain, create_graph, wanted=set(ins))
    reachable = set(toposort(outs))
    result: list[Tensor | None] = []
    for i, x in enumerate(ins):
        g = found.get(x)
        if g is None and x not in reachable:
            if not allow_unused:
                why = "does not require grad" if not x.requires_grad else "is not used to compute the outputs"
                raise ValueError(
                    f"grad: inputs[{i}] (shape {x.shape}) {why}; pass allow_unused=True to get None for it"
                )
            result.append(None)
            continue
        if g is None:  # on the graph, but every op on the way gave no gradient: zero
            g = np.zeros(x.shape, x.dtype)
        result.append(g if isinstance(g, Tensor) else Tensor(g))
    return tuple(result)


class RemovableHandle:
    """What ``register_hook`` and the modules' ``register_*_hook`` return: ``remove()`` unregisters the hook
    (again: no effect)."""

    _ids = itertools.count()

    def __init__(self, hooks: dict[int, Any]) -> None:
        self.hooks_dict = hooks
        self.id = next(RemovableHandle._ids)  # ids grow, so dict order is registration order

    def remove(self) -> None:
        """Unregister the hook; calls already running finish with it."""
        self.hooks_dict.pop(self.id, None)

    def __enter__(self) -> RemovableHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


class Tensor:
    """An n-dimensional float array that records the ops applied to it, for reverse-mode autodiff.

    A float32 or float64 array keeps its dtype and is shared, not copied; Python numbers, lists and
    integer/bool arrays become float32. ``grad`` holds d(root)/d(self) after ``root.backward()``.

    >>> x = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    >>> (x * x).sum().backward()
    >>> x.grad
    array([2., 4., 6.], dtype=float32)
    """

    __slots__ = ("__weakref__", "_ctx", "_hooks", "_retains_grad", "data", "grad", "requires_grad")
    __array_ufunc__ = None  # make `ndarray + Tensor` defer to Tensor.__radd__ instead of looping elementwise
    __hash__ = object.__hash__  # hashable by identity although == compares elementwise

    def __init__(self, data: Any, requires_grad: bool = False) -> None:
        self.data: Array = _as_float_array(data)
        self.grad: Array | None = None
        self.requires_grad = bool(requires_grad)
        self._ctx: Context | None = None
        self._retains_grad = False
        self._hooks: dict[int, Callable[[Any], Any]] | None = None  # made by the first register_hook

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

    def register_hook(self, hook: Callable[[Any], Any]) -> RemovableHandle:
        """Call ``hook(grad)`` each time this tensor's gradient is computed; returns a handle.

        ``grad`` has this tensor's shape: an array in ``backward`` and ``grad``, a Tensor under
        ``create_graph``. On a leaf the hook runs once per backward with the gradient summed over every use,
        before it is added into ``.grad``; on an intermediate, before the gradient flows into the op that made
        the tensor (and what ``retain_grad`` keeps is the hook's result). A hook that returns something other
        than None replaces the gradient; several run in registration order, each on the previous one's
        result. ``handle.remove()`` unregisters it (again: no effect), as in PyTorch.

        Raises:
            RuntimeError: this tensor does not require grad (no gradient will ever be computed for it).
            TypeError: ``hook`` is not callable.
        """
        if not self.requires_grad:
            raise RuntimeError(
                f"register_hook: the tensor (shape {self.shape}) does not require grad, so no gradient is "
                "ever computed for it; make it with requires_grad=True or register on a tensor that has one"
            )
        if not callable(hook):
            raise TypeError(f"register_hook: a hook must be callable, got {type(hook).__name__}")
        if self._hooks is None:
            self._hooks = {}
        handle = RemovableHandle(self._hooks)
        self._hooks[handle.id] = hook
        return handle

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
    def backward(self, grad: Any = None, retain_graph: bool = False, create_graph: bool = False) -> None:
        """Accumulate d(self)/d(t) into ``t.grad`` for every leaf ``t`` (and retained tensor) behind self.

        Args:
            grad: the gradient of some scalar w.r.t. self, of self's shape; may be omitted (seeded with 1)
                only when self has one element.
            retain_graph: keep the saved arrays so that backward can run through this graph again.
            create_graph: not supported here: ``.grad`` holds plain arrays, which optimizers update
                in place. For gradients that can be differentiated again use
                ``microgradcnn.grad(outputs, inputs, create_graph=True)``, which returns them as Tensors.

        Raises:
            RuntimeError: self does not require grad, ``grad`` is missing for a tensor of more than one
                element, the graph was already released by an earlier backward, or an array an op saved
                was modified in place since (naming the op and its input).
            NotImplementedError: for ``create_graph=True`` (a RuntimeError; the message points to ``grad``).
            ValueError: ``grad`` does not have self's shape.
        """
        if create_graph:
            raise NotImplementedError(
                "backward: create_graph=True is not supported by Tensor.backward (.grad holds plain arrays); "
                "use microgradcnn.grad(outputs, inputs, create_graph=True), which returns the gradients as "
                "Tensors that can be differentiated again"
            )
        _backprop([self], [_seed(self, grad, "backward", False)], retain_graph, False)

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


def _fit_gradient(g: Any, parent: Tensor, op: str, i: int) -> Any:
    """``g``, the gradient an op's backward gave for input ``i``, reduced to ``parent``'s shape and cast to
    its dtype (a broadcast input's gradient is summed; a float32 weight in a float64 expression gets float32).
    A Tensor gradient (``create_graph``) is reduced by recorded ops and keeps its dtype.

    Raises:
        RuntimeError: naming the op, when ``g``'s shape does not broadcast to the input's.
    """
    if g.shape != parent.data.shape:
        try:
            g = unbroadcast(g, parent.data.shape)
        except ValueError:
            msg = f"{op}.backward: gradient {g.shape} for input {i} of shape {parent.shape}"
            raise RuntimeError(msg) from None
    if g.dtype != parent.data.dtype and isinstance(g, np.ndarray):
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
    """Record no graph inside the block (or the decorated function): for inference and optimizer steps.

    Per thread, as PyTorch's: another thread keeps recording.
    """

    def __enter__(self) -> no_grad:
        mode = _LOCAL.mode
        self._prev, mode.grad_enabled = mode.grad_enabled, False
        return self

    def __exit__(self, *exc: object) -> None:
        _LOCAL.mode.grad_enabled = self._prev


class enable_grad(contextlib.ContextDecorator):
    """Record the graph inside the block even within ``no_grad`` (per thread), as ``torch.enable_grad``."""

    def __enter__(self) -> enable_grad:
        mode = _LOCAL.mode
        self._prev, mode.grad_enabled = mode.grad_enabled, True
        return self

    def __exit__(self, *exc: object) -> None:
        _LOCAL.mode.grad_enabled = self._prev


def is_grad_enabled() -> bool:
    """False inside ``no_grad`` (in this thread)."""
    return _LOCAL.mode.grad_enabled


class detect_anomaly(contextlib.ContextDecorator):
    """Raise ``RuntimeError`` at the first op whose forward or backward makes NaN or inf, naming it.

    Per thread, like grad mode.
    """

    def __enter__(self) -> detect_anomaly:
        mode = _LOCAL.mode
        self._prev, mode.anomaly = mode.anomaly, True
        return self

    def __exit__(self, *exc: object) -> None:
        _LOCAL.mode.anomaly = self._prev


def enter_scope(owner: Any) -> tuple[_Mode, tuple[Any, ...]]:
    """Push ``owner`` (an nn.Module) on this thread's module-scope stack, for the ops recorded until it is
    popped; returns (the thread's mode, the scope to restore: ``mode.scope = previous``).

    The one implementation of the stack, used by ``scope`` and by ``Module.__call__`` (which runs on every
    module call, where one function call instead of a with-statement's three is measurable at batch 1).
    """
    mode = _LOCAL.mode
    previous = mode.scope
    mode.scope = (*previous, owner)
    return mode, previous


class scope:
    """Record ``owner`` (an nn.Module) as running around the ops made inside, for graph clusters.

    ``Module.__call__`` pushes the same scope around every forward (``enter_scope``). Per thread: a module
    running in one thread never appears in the graphs another thread records.
    """

    __slots__ = ("mode", "owner", "previous")

    def __init__(self, owner: Any) -> None:
        self.owner = owner

    def __enter__(self) -> None:
        self.mode, self.previous = enter_scope(self.owner)

    def __exit__(self, *exc: object) -> None:
        self.mode.scope = self.previous


def current_scope() -> tuple[Any, ...]:
    """The nn.Modules whose forward is running in this thread, outermost first (``()`` outside any)."""
    return _LOCAL.mode.scope


# Tensor's operator methods call the ops, and the ops are Functions defined on top of this module: the one
# import cycle the package allows, closed here at the bottom (early tinygrad's pattern).
from microgradcnn import ops  # noqa: E402
