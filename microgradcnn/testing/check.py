"""``check_op``: the one-line hypothesis property test of an op's backward; ``register_cases`` for new ops."""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from microgradcnn.tensor import REGISTRY, Function, Tensor, toposort
from microgradcnn.testing.gradcheck import GradcheckError, gradcheck, gradgradcheck

Factory = TypeVar("Factory", bound=Callable[..., Any])
Case = tuple[Callable[..., Tensor], tuple[Any, ...]]  # (fn, inputs): gradcheck's arguments


def register_cases(name: str) -> Callable[[Factory], Factory]:
    """Decorator: make a strategy factory the ``OP_CASES`` entry of the registered op ``name``.

    The factory is called with ``check_op``'s strategy overrides (none by default) and returns a hypothesis
    strategy drawing either ``OpCase(fn, inputs)`` or the op's inputs themselves (a Tensor or a tuple), which
    ``check_op`` feeds to the op's ``apply``. A ``@st.composite`` function is such a factory::

        @register_cases("swish")
        def swish_cases(max_side=4):
            return tensors(shapes(max_side=max_side))

    Raises:
        KeyError: if no op is registered under ``name`` (define the Function first; for a private
            ``register=False`` op pass ``cases=`` to ``check_op`` instead).
        ValueError: if another factory already holds ``name`` (re-running the same definition, as in a
            notebook, replaces it).
    """
    from microgradcnn.testing.strategies import OP_CASES  # needs hypothesis, like every strategy

    if name not in REGISTRY:
        raise KeyError(
            f"register_cases: no registered op named {name!r}{_did_you_mean(name)}; define its Function "
            "first, or pass cases= to check_op for a private (register=False) op"
        )

    def decorate(factory: Factory) -> Factory:
        taken = OP_CASES.get(name)
        if taken is not None and _where(taken) != _where(factory):
            raise ValueError(f"register_cases: op {name!r} already has cases {_where(taken)}")
        OP_CASES[name] = factory
        return factory

    return decorate


def check_op(
    name: str | type[Function],
    max_examples: int | None = 50,
    *,
    cases: Any = None,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    **strategy_overrides: Any,
) -> None:
    """Run a hypothesis property test: for drawn inputs, the op's gradients match central differences.

    For an op with ``differentiable_backward`` (every built-in op) each case also goes through
    ``gradgradcheck``: its second derivatives are proved the same way.

    ``name`` is a registered op name or a ``Function`` subclass. Its cases come from ``cases`` if given (a
    strategy, or a factory called with ``strategy_overrides``), else from
    ``microgradcnn.testing.strategies.OP_CASES[name]`` (see ``register_cases``) built with
    ``strategy_overrides``, else they are inferred from ``forward``'s signature: one float64 tensor per
    positional array input (the parameters after ``ctx`` without a default), all of one shared small shape,
    values spaced apart and away from 0 (``strategies.default_cases``, which takes the overrides). A case is
    an ``OpCase(fn, inputs)``, or just the inputs (a Tensor or a tuple) for the op's ``apply``. Each case
    goes through ``gradcheck(fn, inputs, eps, atol, rtol)`` (and ``gradgradcheck`` with the same
    tolerances, as said above).

    The active hypothesis profile's settings apply, with ``max_examples`` on top (None keeps the profile's),
    no deadline (a gradient check is slow by nature) and the first failure raised alone: hypothesis shrinks
    it to a minimal example and prints it, so a pytest test body can be just ``check_op("conv2d")``.

    Raises:
        KeyError: if ``name`` is not a registered op, or it has no cases and its ``forward``'s signature
            does not tell its array inputs (``*args``, a keyword-only argument without a default): the
            message names the op and says to pass ``cases=``.
        TypeError: for a ``name`` that is neither a string nor a Function subclass, a ``cases`` that is not
            a strategy, or a case that is neither an OpCase nor inputs.
        GradcheckError: for the (shrunk) case whose gradient is wrong, naming the op, the input shapes and
            the op's attributes.
    """
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    op, fn_cls = _resolve(name)
    strategy = _strategy(op, fn_cls, cases, strategy_overrides)
    if not isinstance(strategy, st.SearchStrategy):
        got = type(strategy).__name__
        raise TypeError(f"check_op({op!r}): cases must be a strategy or a factory of one, not {got}")
    if max_examples is not None and (not isinstance(max_examples, int) or max_examples < 1):
        raise ValueError(f"check_op({op!r}): max_examples must be a positive int or None: {max_examples!r}")

    # Second order too, for an op whose backward is differentiable (every built-in op): gradgradcheck.
    second_order = fn_cls is not None and fn_cls.differentiable_backward

    def test(case: Any) -> None:
        fn, inputs = _unpack(case, op, fn_cls)
        try:
            gradcheck(fn, inputs, eps=eps, atol=atol, rtol=rtol)
            if second_order:
                gradgradcheck(fn, inputs, eps=eps, atol=atol, rtol=rtol)
        except GradcheckError as err:
            raise GradcheckError(f"check_op({op!r}): {err}\n    {_describe(fn, inputs, op)}") from None

    # One name and database key per op: hypothesis prints "Falsifying example: check_op_conv2d(case=...)",
    # and the failures it saves for one op are not replayed as (meaningless) examples of another.
    test.__name__ = test.__qualname__ = "check_op_" + re.sub(r"\W", "_", op)
    test._hypothesis_internal_add_digest = op.encode()  # type: ignore[attr-defined]
    suppressed = {*settings.default.suppress_health_check, HealthCheck.too_slow, HealthCheck.data_too_large}
    overrides: dict[str, Any] = {"deadline": None, "report_multiple_bugs": False,
                                 "suppress_health_check": sorted(suppressed, key=lambda h: h.value)}
    if max_examples is not None:
        overrides["max_examples"] = max_examples
    settings(**overrides)(given(case=strategy)(test))()


def _resolve(name: Any) -> tuple[str, type[Function] | None]:
    """The op's name, and the Function class whose ``apply`` raw drawn inputs go to (None: not known)."""
    if isinstance(name, type) and issubclass(name, Function):
        return name.name, name
    if isinstance(name, str):
        return name, REGISTRY.get(name)
    raise TypeError(f"check_op: name must be an op name or a Function subclass, got {type(name).__name__}")


def _strategy(op: str, fn_cls: type[Function] | None, cases: Any, overrides: dict[str, Any]) -> Any:
    """The strategy to draw cases from: ``cases`` (called with the overrides if a factory) or OP_CASES."""
    from hypothesis import strategies as st

    if cases is not None:
        if isinstance(cases, st.SearchStrategy):
            if overrides:
                raise TypeError(
                    f"check_op({op!r}): strategy overrides {sorted(overrides)} need a factory as cases=, not "
                    "a strategy (or build the strategy with them yourself)"
                )
            return cases
        return cases(**overrides) if callable(cases) else cases

    from microgradcnn.testing.strategies import OP_CASES

    if fn_cls is None:
        raise KeyError(f"check_op: no registered op named {op!r}{_did_you_mean(op)}")
    if REGISTRY.get(op) is fn_cls and op in OP_CASES:
        return OP_CASES[op](**overrides)
    # No cases of its own: a user's op, or a private (register=False) class, for which OP_CASES[op] (if any)
    # would exercise the registered op of that name instead. Infer them from its forward's signature.
    return _inferred_cases(op, fn_cls, overrides)


_HOW = "pass cases=<a strategy of OpCase or of input tuples>"


def _inferred_cases(op: str, fn_cls: type[Function], overrides: dict[str, Any]) -> Any:
    """``default_cases`` for the array inputs ``fn_cls.forward`` takes, each drawn case applied by
    ``fn_cls.apply`` (its keyword attributes keep their defaults)."""
    from microgradcnn.testing.strategies import OpCase, default_cases

    names = _array_inputs(op, fn_cls)
    allowed = set(inspect.signature(default_cases).parameters) - {"num_inputs"}
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise TypeError(
            f"check_op({op!r}): the cases inferred from {fn_cls.__qualname__}.forward take the overrides "
            f"{sorted(allowed)}, not {unknown}; for other inputs {_HOW}"
        )
    apply = _InferredApply(op, fn_cls, names)
    return default_cases(len(names), **overrides).map(lambda inputs: OpCase(apply, inputs))


def _array_inputs(op: str, fn_cls: type[Function]) -> list[str]:
    """The names of ``fn_cls.forward``'s array inputs: its positional parameters after ``ctx`` that have
    no default. Raises KeyError (saying to pass ``cases=``) when the signature does not tell them."""
    where = f"{fn_cls.__qualname__}.forward"
    how = _HOW + (f", or decorate a strategy factory with @register_cases({op!r})"
                  if REGISTRY.get(op) is fn_cls else "")

    def cannot(reason: str) -> KeyError:
        return KeyError(f"check_op({op!r}): no cases given and none can be inferred: {where} {reason}; {how}")

    try:
        params = list(inspect.signature(fn_cls.forward).parameters.values())
    except (TypeError, ValueError):
        raise cannot("has no signature to read") from None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if not params or params[0].kind not in positional:
        raise cannot("does not take ctx as its first argument (is it a @staticmethod?)")
    names = []
    for p in params[1:]:
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            raise cannot(f"takes *{p.name}, so the number of its array inputs is unknown")
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty:
            raise cannot(f"has a keyword-only argument {p.name!r} without a default, whose value is unknown")
        if p.kind in positional and p.default is inspect.Parameter.empty:
            names.append(p.name)
    if not names:
        raise cannot("takes no array input")
    return names


class _InferredApply:
    """``fn_cls.apply`` for inferred cases; says where the inputs came from when the op refuses them."""

    def __init__(self, op: str, fn_cls: type[Function], names: list[str]) -> None:
        self.fn_cls = fn_cls
        self.hint = (f"check_op({op!r}) inferred these cases from {fn_cls.__qualname__}.forward(ctx, "
                     f"{', '.join(names)}): float64 tensors of one shared shape, values spaced apart and "
                     f"away from 0; if the op needs other inputs, {_HOW}")

    def __call__(self, *inputs: Tensor) -> Tensor:
        try:
            return self.fn_cls.apply(*inputs)
        except Exception as err:
            err.add_note(self.hint)
            raise


def _unpack(case: Any, op: str, fn_cls: type[Function] | None) -> Case:
    """(fn, inputs) from a drawn OpCase, or from raw inputs for ``fn_cls.apply``."""
    if hasattr(case, "fn") and hasattr(case, "inputs"):  # an OpCase (duck-typed: users may bring their own)
        return case.fn, tuple(case.inputs)
    inputs = (case,) if isinstance(case, Tensor) else case
    if not isinstance(inputs, tuple | list):
        raise TypeError(
            f"check_op({op!r}): a case must be an OpCase(fn, inputs), a Tensor or a tuple of inputs, "
            f"got {type(case).__name__}"
        )
    if fn_cls is None:
        raise TypeError(f"check_op({op!r}): cases drew raw inputs, but no Function is known to apply them to")
    return fn_cls.apply, tuple(inputs)


def _describe(fn: Callable[..., Tensor], inputs: tuple[Any, ...], op: str) -> str:
    """What a failure report adds: the inputs and op attributes, and where inferred cases came from."""
    text = _describe_inputs(fn, inputs, op)
    return f"{text}\n    {fn.hint}" if isinstance(fn, _InferredApply) else text


def _describe_inputs(fn: Callable[..., Tensor], inputs: tuple[Any, ...], op: str) -> str:
    """Input shapes and dtypes, and the attributes of the op's node in the graph ``fn`` records."""
    parts = [_summary(x) for x in inputs]
    text = f"inputs: {', '.join(parts) or 'none'}"
    try:
        out = fn(*(Tensor(x.data, x.requires_grad) if isinstance(x, Tensor) else x for x in inputs))
    except Exception:  # the failure being reported matters more than this extra detail
        return text
    if isinstance(out, Tensor):
        for node in toposort(out):
            if node._ctx is not None and node._ctx.fn.name == op:
                attrs = ", ".join(f"{k}={_summary(v)}" for k, v in node._ctx.attrs.items())
                return f"{text}; {op} attrs: {attrs or 'none'}"
    return text


def _summary(x: Any) -> str:
    """``Tensor float64 (2, 3)`` for arrays, the repr for small values."""
    if isinstance(x, Tensor):
        return f"Tensor {x.dtype} {x.shape}" + (" requires_grad" if x.requires_grad else "")
    if isinstance(x, np.ndarray):
        return f"ndarray {x.dtype} {x.shape}"
    text = repr(x)
    return text if len(text) <= 40 else text[:37] + "..."


def _did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name, list(REGISTRY), n=3)
    return f" (did you mean {', '.join(map(repr, close))}?)" if close else ""


def _where(factory: Any) -> str:
    return f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', repr(factory))}"
