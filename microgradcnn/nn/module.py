"""Module and Parameter: attribute-registered trees of layers, their parameters and state dicts."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from microgradcnn import tensor as _tensor
from microgradcnn.tensor import Array, Context, Function, RemovableHandle, Tensor

# Parameters are float32 unless converted with Module.to(np.float64) (float64 is for gradient checks).
_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class Parameter(Tensor):
    """A Tensor that a Module registers as a trainable parameter: ``requires_grad=True`` by default.

    Assigning one to a Module attribute registers it (``self.weight = Parameter(...)``), which is all it
    takes for ``parameters()``, ``state_dict()`` and optimizers to see it. The array is shared, not copied,
    like ``Tensor``; ints and Python numbers become float32.

    >>> p = Parameter(np.zeros(3, dtype=np.float32))
    >>> p.requires_grad, p.dtype
    (True, dtype('float32'))
    """

    __slots__ = ()  # Tensor uses __slots__; keep Parameters as small and fast as Tensors

    def __init__(self, data: Any, requires_grad: bool = True) -> None:
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class StateDictError(ValueError, RuntimeError):
    """``load_state_dict`` got missing or unexpected keys, or arrays of the wrong shape.

    A ValueError by the project's convention for bad values, and a RuntimeError like PyTorch's
    ``load_state_dict`` error, so code written for either catches it.
    """


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict(strict=False)`` skipped, as PyTorch's ``_IncompatibleKeys``."""

    missing_keys: list[str]
    unexpected_keys: list[str]


class Module:
    """Base class of layers and models: ``forward`` computes, attributes hold parameters and submodules.

    Assigning a ``Parameter`` or a ``Module`` to an attribute registers it, in assignment order::

        class TwoLayer(Module):
            def __init__(self):
                super().__init__()
                self.fc1 = Linear(784, 32)
                self.fc2 = Linear(32, 10)

            def forward(self, x):
                return self.fc2(self.fc1(x).relu())

    ``model(x)`` runs ``forward`` inside ``model``'s module scope (``microgradcnn.tensor.enter_scope``, the
    logic of ``tensor.scope``), so every op it records knows which modules it ran in (the graph renderer
    draws them as clusters). Names are PyTorch's:
    ``named_parameters()`` gives dotted names (``"fc1.weight"``) that are also the ``state_dict()`` keys.
    State that is not trained (BatchNorm's running statistics) is a *buffer*: an ndarray registered with
    ``register_buffer``, saved in ``state_dict`` (``"bn.running_mean"``) but never a parameter.
    """

    training: bool

    def __init__(self) -> None:
        # object.__setattr__: our __setattr__ needs these dicts to exist already.
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "training", True)

    # ---- registration ---------------------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        params: dict[str, Parameter | None] | None = self.__dict__.get("_parameters")
        if params is None:
            raise RuntimeError(
                f"cannot assign {name!r} before Module.__init__() ran; call super().__init__() first"
            )
        modules: dict[str, Module] = self.__dict__["_modules"]
        buffers: dict[str, np.ndarray | None] = self.__dict__["_buffers"]
        if isinstance(value, Parameter):
            modules.pop(name, None)
            self._drop_buffer(name)
            params[name] = value
        elif isinstance(value, Module):
            params.pop(name, None)
            self._drop_buffer(name)
            modules[name] = value
        elif name in buffers:  # assigning to a buffer's name replaces its array (PyTorch)
            value = _buffer_array(value, name, type(self).__name__)
            buffers[name] = value
        elif name in params:
            if value is not None:  # a registered parameter may be set to None (PyTorch), nothing else
                raise TypeError(
                    f"cannot assign {type(value).__name__} to parameter {name!r} of {type(self).__name__}; "
                    "assign a Parameter or None"
                )
            params[name] = None
        elif name in modules:
            del modules[name]
        # The attribute lives in __dict__ too, so reading it (every forward) is a plain attribute lookup.
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        self._drop_buffer(name)
        object.__delattr__(self, name)

    def _drop_buffer(self, name: str) -> None:
        self._buffers.pop(name, None)
        self._non_persistent_buffers.discard(name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Register ``param`` under ``name``; ``None`` reserves the name (e.g. ``bias=False``)."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(
                f"register_parameter: {name!r} must be a Parameter or None, got {type(param).__name__}"
            )
        self._parameters[name] = param
        self._modules.pop(name, None)
        self._drop_buffer(name)
        object.__setattr__(self, name, param)

    def register_buffer(self, name: str, tensor: Any, persistent: bool = True) -> None:
        """Register the array ``tensor`` as state that is not trained: ``self.<name>``, a buffer.

        Buffers (BatchNorm's ``running_mean``) are listed by ``named_buffers()``, follow ``to()`` when they
        hold floats, and, when ``persistent``, are saved and loaded by ``state_dict`` /
        ``load_state_dict`` under the dotted name (``"bn.running_mean"``), as in PyTorch. They are never
        parameters, so optimizers leave them alone. ``tensor`` is an ndarray (kept, not copied; a Tensor
        gives its array, a NumPy scalar a 0-d array) or ``None``, which reserves the name and is skipped
        by ``state_dict``. Assigning ``self.<name> = array`` later replaces the buffer's array.

        Raises:
            TypeError: for a name that is not a string or a value that is not an array or None.
            KeyError: for an empty or dotted name, or one already used by a parameter, submodule or other
                attribute.
        """
        if "_buffers" not in self.__dict__:
            raise RuntimeError(
                f"cannot register buffer {name!r} before Module.__init__() ran; call super().__init__() first"
            )
        if not isinstance(name, str):
            raise TypeError(f"register_buffer: buffer name must be a string, got {type(name).__name__}")
        if not name or "." in name:
            raise KeyError(f"register_buffer: buffer name must be non-empty and contain no '.', got {name!r}")
        if name not in self._buffers and (
            name in self._parameters or name in self._modules or hasattr(self, name)
        ):
            raise KeyError(f"register_buffer: attribute {name!r} of {type(self).__name__} already exists")
        array = _buffer_array(tensor, name, type(self).__name__)
        self._buffers[name] = array
        if persistent:
            self._non_persistent_buffers.discard(name)
        else:
            self._non_persistent_buffers.add(name)
        object.__setattr__(self, name, array)

    # ---- running ----------------------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The computation; subclasses override it. Call the module (``model(x)``), not ``forward``."""
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        mode, previous = _tensor.enter_scope(self)  # the module-scope stack, for graph clusters
        try:
            if self._forward_hooks or self._backward_hooks:  # None or {} unless a hook is registered
                return self._call_with_hooks(args, kwargs)
            return self.forward(*args, **kwargs)
        finally:
            mode.scope = previous

    # ---- hooks ------------------------------------------------------------------------------------------
    # Class-level None: a module without hooks carries no hook dicts at all, and __call__ tests one falsy
    # attribute per kind. The dicts are made on the first registration (object.__setattr__: not attributes
    # that __setattr__ should register).
    _forward_hooks: dict[int, Callable[..., Any]] | None = None
    _backward_hooks: dict[int, Callable[..., Any]] | None = None

    def register_forward_hook(self, hook: Callable[[Module, tuple[Any, ...], Any], Any]) -> RemovableHandle:
        """Call ``hook(module, inputs, output)`` after every ``forward`` of this module; returns a handle.

        ``inputs`` is the tuple of positional arguments (keyword arguments are not passed, as in PyTorch).
        A hook that returns something other than None replaces the output: later hooks and the caller see the
        replacement. Hooks run in registration order; ``handle.remove()`` unregisters one, and is safe while
        the hooks are running (the running call finishes with the hooks it started with).
        """
        return self._add_hook("_forward_hooks", hook)

    def register_full_backward_hook(
        self, hook: Callable[[Module, tuple[Array | None, ...], tuple[Array | None, ...]], Any]
    ) -> RemovableHandle:
        """Call ``hook(module, grad_input, grad_output)`` when backward has the gradients w.r.t. the inputs.

        ``grad_output`` holds the gradients w.r.t. the output (a Tensor, or each Tensor of a tuple output),
        ``grad_input`` those w.r.t. the positional Tensor inputs, arrays of their shapes; None for an input
        that is not a Tensor or does not require grad. A hook may return a tuple of the same length to replace
        ``grad_input`` (what flows on to earlier layers); None keeps it. The hook runs once per backward,
        after the gradients of all inputs that require grad have arrived (with no such input: when the
        outputs' gradients have). Registration order and removal are as for ``register_forward_hook``.

        The mechanism is PyTorch's: while a backward hook is registered, each call wraps the inputs and the
        outputs in an identity op (``backward_hook``, drawn in graphs) whose backward reports the gradient.
        Replacing ``grad_input`` is supported when at most one input requires grad.

        Raises:
            RuntimeError: (during backward) a hook returned a tuple of the wrong length, or a replacement
                for a module with several inputs that require grad.
        """
        return self._add_hook("_backward_hooks", hook)

    def _add_hook(self, kind: str, hook: Callable[..., Any]) -> RemovableHandle:
        if not callable(hook):
            raise TypeError(f"{type(self).__name__}: a hook must be callable, got {type(hook).__name__}")
        hooks = self.__dict__.get(kind)
        if hooks is None:
            hooks = {}
            object.__setattr__(self, kind, hooks)
        handle = RemovableHandle(hooks)
        hooks[handle.id] = hook
        return handle

    def _call_with_hooks(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``forward`` with the registered hooks around it (only reached when some hook is registered)."""
        state = _BackwardHookState(self, args) if self._backward_hooks else None
        if state is not None:
            args = state.wrap_inputs(args)
        output = self.forward(*args, **kwargs)
        for hook in list((self._forward_hooks or {}).values()):  # a copy: hooks may remove themselves
            replaced = hook(self, args, output)
            if replaced is not None:
                output = replaced
        if state is not None:
            output = state.wrap_outputs(output)
        return output

    def train(self, mode: bool = True) -> Module:
        """Set ``training`` on this module and all submodules; returns self.

        Layers that behave differently in training (BatchNorm's batch statistics, Dropout's masks) read
        ``self.training``; ``eval()`` switches them to inference.

        Raises:
            TypeError: for a ``mode`` that is not a bool.
        """
        if not isinstance(mode, bool | np.bool_):
            raise TypeError(f"{type(self).__name__}.train: mode must be a bool, got {mode!r}")
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> Module:
        """Same as ``train(False)``."""
        return self.train(False)

    # ---- traversal --------------------------------------------------------------------------------------
    def named_children(self) -> Iterator[tuple[str, Module]]:
        """Direct submodules with their attribute names, in registration order."""
        yield from self._modules.items()

    def children(self) -> Iterator[Module]:
        """Direct submodules, in registration order."""
        yield from self._modules.values()

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module (name ``prefix``, ``""`` by default) and every submodule, depth first, each once."""
        seen: set[int] = set()
        stack: list[tuple[str, Module]] = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            kids = [(f"{name}.{k}" if name else k, m) for k, m in module._modules.items()]
            stack.extend(reversed(kids))  # reversed: pop() then visits them in registration order

    def _named_members(self, registry: str, prefix: str, recurse: bool) -> Iterator[tuple[str, Any]]:
        """The non-None entries of each module's ``registry`` dict (``"_parameters"`` or ``"_buffers"``) with
        dotted names, each object once even if shared."""
        seen: set[int] = set()
        owners = self.named_modules(prefix) if recurse else iter([(prefix, self)])
        for module_name, module in owners:
            for name, member in getattr(module, registry).items():
                if member is None or id(member) in seen:
                    continue
                seen.add(id(member))
                yield (f"{module_name}.{name}" if module_name else name), member

    def modules(self) -> Iterator[Module]:
        """This module and every submodule, depth first, each once."""
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Parameter]]:
        """Every parameter with its dotted name (``"0.weight"``), each once even if shared; None skipped."""
        yield from self._named_members("_parameters", prefix, recurse)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        """Every parameter, each once, in ``named_parameters`` order."""
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, np.ndarray]]:
        """Every buffer (persistent or not) with its dotted name (``"1.running_var"``); None skipped."""
        yield from self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse: bool = True) -> Iterator[np.ndarray]:
        """Every buffer's array, in ``named_buffers`` order."""
        for _, buf in self.named_buffers(recurse=recurse):
            yield buf

    def _named_state(self) -> Iterator[tuple[str, Module, str, np.ndarray]]:
        """(state_dict key, owning module, attribute name, array) of every parameter and persistent buffer.

        PyTorch's order: each module's parameters, then its persistent buffers, then its children's.
        """
        seen: set[int] = set()
        for module_name, module in self.named_modules():
            dot = f"{module_name}." if module_name else ""
            for name, param in module._parameters.items():
                if param is not None and id(param) not in seen:
                    seen.add(id(param))
                    yield dot + name, module, name, param.data
            for name, buf in module._buffers.items():
                if buf is not None and name not in module._non_persistent_buffers:
                    yield dot + name, module, name, buf

    # ---- gradients, dtype -------------------------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every parameter's ``.grad``: None (the default, as PyTorch) or zeros in place."""
        for param in self.parameters():
            if set_to_none or param.grad is None:
                param.grad = None
            else:
                param.grad[...] = 0

    def to(self, dtype: Any) -> Module:
        """Convert every parameter (and its gradient) to float32 or float64 ``dtype`` in place; returns self.

        Floating-point buffers are converted too (new arrays); integer ones, such as BatchNorm's
        ``num_batches_tracked``, keep their dtype, as in PyTorch. The Parameter objects stay the same, so an
        optimizer holding them keeps working; create the optimizer after converting, though, or its state
        (momentum, Adam moments) keeps the old dtype.

        Raises:
            TypeError: for a dtype other than float32 or float64.
        """
        try:
            target = np.dtype(dtype)
        except TypeError:
            target = None
        if target is None or target not in _DTYPES:
            raise TypeError(f"{type(self).__name__}.to: dtype must be float32 or float64, got {dtype!r}")
        for param in self.parameters():
            param.data = param.data.astype(target, copy=False)
            if param.grad is not None:
                param.grad = param.grad.astype(target, copy=False)
        for module in self.modules():
            for name, buf in module._buffers.items():
                if buf is not None and buf.dtype.kind == "f" and buf.dtype != target:
                    setattr(module, name, buf.astype(target))
        return self

    def float(self) -> Module:
        """Same as ``to(np.float32)``."""
        return self.to(np.float32)

    def double(self) -> Module:
        """Same as ``to(np.float64)``."""
        return self.to(np.float64)

    # ---- state dicts ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter's array and every persistent buffer, keyed by their dotted names.

        PyTorch's keys and order: a module's parameters (``"bn.weight"``), then its buffers
        (``"bn.running_mean"``, ``"bn.num_batches_tracked"``), then its children's. Unlike PyTorch the
        arrays are copies, not views: a snapshot taken during training stays as it was.
        """
        return {key: array.copy() for key, _, _, array in self._named_state()}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Copy arrays into the parameters and buffers of the same names, in place (objects and dtypes kept).

        With ``strict=True`` the keys must match ``state_dict()``'s exactly; with ``strict=False``
        missing and unexpected keys are skipped and returned. Shapes must match either way. Nothing is
        changed unless every check passes.

        Raises:
            StateDictError: (a ValueError and a RuntimeError) listing missing/unexpected keys or the
                mismatched shapes.
            TypeError: for a value that is not a numeric array.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"load_state_dict: expected a mapping of name -> array, got {type(state_dict).__name__}"
            )
        own = {key: array for key, _, _, array in self._named_state()}
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        problems = []
        if strict and missing:
            problems.append(f"missing key(s): {', '.join(missing)}")
        if strict and unexpected:
            problems.append(f"unexpected key(s): {', '.join(map(str, unexpected))}")
        arrays: dict[str, np.ndarray] = {}
        for name, target in own.items():
            if name not in state_dict:
                continue
            value = state_dict[name]
            array = np.asarray(value.data if isinstance(value, Tensor) else value)
            if array.dtype.kind not in "biuf":
                raise TypeError(f"load_state_dict: {name!r} holds a {array.dtype} array, want a numeric one")
            if array.shape != target.shape:
                problems.append(f"size mismatch for {name}: checkpoint {array.shape}, model {target.shape}")
            arrays[name] = array
        if problems:
            raise StateDictError(
                f"error loading state_dict into {type(self).__name__}: " + "; ".join(problems)
            )
        for name, array in arrays.items():
            own[name][...] = array  # in place: the Parameter and its dtype stay, an optimizer keeps it
        return IncompatibleKeys(missing, [str(k) for k in unexpected])

    # ---- printing ---------------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        """The text inside the parentheses of this module's repr; layers override it."""
        return ""

    def __repr__(self) -> str:
        lines = []
        for name, child in self._modules.items():
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n" + "\n".join(lines) + "\n)"


def _buffer_array(value: Any, name: str, owner: str) -> np.ndarray | None:
    """A buffer's value as stored: an ndarray (kept), a Tensor's array, a NumPy scalar as 0-d, or None."""
    if value is None or isinstance(value, np.ndarray):
        return value
    if isinstance(value, Tensor):
        return value.data
    if isinstance(value, np.generic):
        return np.asarray(value)
    raise TypeError(f"{owner}: buffer {name!r} must be a numpy array or None, got {type(value).__name__}")


class _BackwardHookFn(Function, register=False):
    """Identity whose backward hands the gradient to a module's backward-hook state (PyTorch's mechanism)."""

    name = "backward_hook"
    differentiable_backward = True  # the identity backward is made of nothing: fine for any order

    @staticmethod
    def forward(ctx: Context, x: Array, state: _BackwardHookState, slot: tuple[str, int]) -> Array:
        return x

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any]:
        return (ctx.attrs["state"].arrived(ctx.attrs["slot"], grad),)


class _BackwardHookState:
    """One hooked call's gradients: collects grad_output and grad_input, runs the hooks once both are in."""

    def __init__(self, module: Module, args: tuple[Any, ...]) -> None:
        self.module = module
        self.n_inputs = len(args)
        self.waiting = {i for i, a in enumerate(args) if isinstance(a, Tensor) and a.requires_grad}
        self.grad_input: list[Any] = [None] * self.n_inputs
        self.grad_output: list[Any] = []
        self.outputs_waiting: set[int] = set()
        self.pending_inputs, self.pending_outputs = set(self.waiting), set[int]()

    def wrap_inputs(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(
            _BackwardHookFn.apply(a, state=self, slot=("in", i)) if i in self.waiting else a
            for i, a in enumerate(args)
        )

    def wrap_outputs(self, output: Any) -> Any:
        single = isinstance(output, Tensor)
        outs = (output,) if single else output
        if not isinstance(outs, tuple):
            return output  # not a Tensor nor a tuple: nothing to report gradients for
        self.grad_output = [None] * len(outs)
        self.outputs_waiting = {i for i, o in enumerate(outs) if isinstance(o, Tensor) and o.requires_grad}
        wrapped = tuple(
            _BackwardHookFn.apply(o, state=self, slot=("out", i)) if i in self.outputs_waiting else o
            for i, o in enumerate(outs)
        )
        self.pending_outputs = set(self.outputs_waiting)
        return wrapped[0] if single else wrapped

    def arrived(self, slot: tuple[str, int], grad: Any) -> Any:
        """Record one gradient; when the last one is in, run the hooks. Returns the gradient to pass on."""
        kind, i = slot
        if kind == "out":
            self.grad_output[i] = grad
            self.pending_outputs.discard(i)
            if not self.waiting and not self.pending_outputs:
                self._fire()
                self.pending_outputs = set(self.outputs_waiting)  # ready for another backward
            return grad
        self.grad_input[i] = grad
        self.pending_inputs.discard(i)
        if self.pending_inputs:
            return grad
        replaced = self._fire()
        self.pending_inputs = set(self.waiting)
        self.pending_outputs = set(self.outputs_waiting)
        return grad if replaced is None else replaced[i]

    def _fire(self) -> tuple[Any, ...] | None:
        module, result = self.module, None
        grad_input, grad_output = tuple(self.grad_input), tuple(self.grad_output)
        for hook in list((module._backward_hooks or {}).values()):
            new = hook(module, grad_input, grad_output)
            if new is None:
                continue
            new = tuple(new)
            if len(new) != self.n_inputs:
                raise RuntimeError(
                    f"{type(module).__name__} backward hook returned {len(new)} gradients for "
                    f"{self.n_inputs} inputs"
                )
            if len(self.waiting) > 1:
                raise RuntimeError(
                    f"{type(module).__name__} backward hook: replacing grad_input is supported for modules "
                    f"with at most one input that requires grad, this one has {len(self.waiting)}"
                )
            grad_input = result = new
        self.grad_input = [None] * self.n_inputs
        return result
