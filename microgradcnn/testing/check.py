"""``check_op``: the one-line hypothesis property test of an op's backward against finite differences."""

from __future__ import annotations

from typing import Any

from microgradcnn.tensor import REGISTRY, Function


def check_op(name: str | type[Function], max_examples: int = 50, **strategy_overrides: Any) -> None:
    """Run a hypothesis property test: for drawn inputs, the op's gradients match central differences.

    ``name`` is a registered op name or a ``Function`` subclass; its strategy comes from
    ``microgradcnn.testing.strategies.OP_CASES`` (built with ``strategy_overrides``). The active hypothesis
    profile's settings apply, with ``max_examples`` on top. Raises on the first failure (hypothesis shrinks
    it to a minimal example and prints it), so a pytest test body can be just ``check_op("conv2d")``.

    Raises:
        KeyError: if the op has no strategy in ``OP_CASES``.
        GradcheckError: when a drawn case's gradient is wrong.
    """
    from hypothesis import given, settings

    from microgradcnn.testing.gradcheck import gradcheck
    from microgradcnn.testing.strategies import cases_for

    op = name if isinstance(name, str) else name.name
    if op not in REGISTRY:
        raise KeyError(f"check_op: no registered op named {op!r}")
    strategy = cases_for(op, **strategy_overrides)

    @settings(max_examples=max_examples)
    @given(case=strategy)
    def gradients_match_central_differences(case: Any) -> None:
        gradcheck(case.fn, case.inputs)

    gradients_match_central_differences()
