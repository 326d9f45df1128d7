"""check_op and register_cases: built-in and user ops, cases=, raw-input cases, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st

import microgradcnn as mg
from microgradcnn.testing import GradcheckError, check_op, register_cases
from microgradcnn.testing.strategies import OP_CASES, OpCase, tensors


@pytest.fixture
def scratch_registry():
    """Ops and cases a test registers are gone afterwards, so other tests see the built-in tables only."""
    ops, cases = dict(mg.REGISTRY), dict(OP_CASES)
    yield
    mg.REGISTRY.clear()
    mg.REGISTRY.update(ops)
    OP_CASES.clear()
    OP_CASES.update(cases)


def _softsign(slope):
    """A private softsign x / (1 + |x|) whose backward is multiplied by ``slope`` (1: right)."""

    class Softsign(mg.Function, register=False):
        name = "test_softsign"

        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x / (1 + np.abs(x))

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return (slope * grad / (1 + np.abs(x)) ** 2,)

    return Softsign


class _Hypot(mg.Function, register=False):
    """sqrt(a**2 + b**2): two inputs, for cases that draw input tuples."""

    name = "test_hypot"

    @staticmethod
    def forward(ctx, a, b):
        out = np.sqrt(a * a + b * b)
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        a, b, out = ctx.saved_tensors
        return grad * a / out, grad * b / out


def test_checks_a_builtin_op_by_name_and_by_class():
    check_op("tanh", max_examples=5)
    check_op(mg.REGISTRY["relu"], max_examples=5)


def test_a_private_op_with_cases_passes_and_a_broken_one_fails_naming_op_and_shapes():
    nonzero = st.floats(0.1, 2.0) | st.floats(-2.0, -0.1)  # keeps |x| from softsign's kink at 0
    check_op(_softsign(1.0), max_examples=10, cases=tensors(elements=nonzero))
    want = r"check_op\('test_softsign'\): gradcheck: gradient of input 0"
    with pytest.raises(GradcheckError, match=want) as err:
        check_op(_softsign(1.01), max_examples=10, cases=tensors(elements=nonzero))
    assert "inputs: Tensor float64" in str(err.value)
    assert "test_softsign attrs: none" in str(err.value)


def test_the_failure_report_names_the_op_and_shrinks():
    with pytest.raises(GradcheckError) as err:
        check_op(_softsign(2.0), max_examples=20, cases=tensors(elements=st.floats(0.5, 1.0)))
    # check_op's own message, not hypothesis's report around it (whose wording is hypothesis's to change)
    assert str(err.value).startswith("check_op('test_softsign'): gradcheck: ")
    assert "inputs: Tensor float64 () requires_grad" in str(err.value)  # shrunk to a 0-d tensor


def test_cases_may_draw_input_tuples_for_the_ops_apply():
    positive = tensors(shape=(2, 3), elements=st.floats(0.5, 2.0))
    check_op(_Hypot, max_examples=10, cases=st.tuples(positive, positive))


def test_cases_may_be_a_factory_that_takes_the_overrides():
    calls = []

    def factory(side=2):
        calls.append(side)
        return tensors(shape=(side,)).map(lambda t: OpCase(mg.REGISTRY["tanh"].apply, (t,)))

    check_op("tanh", max_examples=3, cases=factory, side=5)
    assert calls == [5]
    with pytest.raises(TypeError, match="need a factory as cases="):
        check_op("tanh", max_examples=3, cases=tensors(), side=5)


def test_op_attrs_appear_in_the_failure(scratch_registry):
    class Scale(mg.Function):
        name = "test_scale"

        @staticmethod
        def forward(ctx, x, *, factor):
            return x * factor

        @staticmethod
        def backward(ctx, grad):
            return (grad * 3.0,)  # right only for factor=3

    cases = tensors(shape=(2,)).map(lambda t: OpCase(lambda x: Scale.apply(x, factor=2.0), (t,)))
    with pytest.raises(GradcheckError, match=r"test_scale attrs: factor=2\.0"):
        check_op("test_scale", max_examples=5, cases=cases)


def test_register_cases_makes_check_op_a_one_liner(scratch_registry):
    class Cube(mg.Function):
        name = "test_cube"

        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x**3

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return (3 * x**2 * grad,)

    check_op("test_cube", max_examples=5)  # a registered op with no cases: inferred from forward(ctx, x)
    drawn = []

    @register_cases("test_cube")
    def cube_cases(max_side=3):
        return tensors(shape=(max_side,)).map(lambda t: drawn.append(t.shape) or t)

    check_op("test_cube", max_examples=5)
    check_op(Cube, max_examples=5, max_side=1)
    assert set(drawn) == {(3,), (1,)}  # the registered factory, with and without the override
    register_cases("test_cube")(cube_cases)  # the same factory again (a re-run notebook cell) is fine

    def other_cases():
        return tensors()

    with pytest.raises(ValueError, match="already has cases"):
        register_cases("test_cube")(other_cases)


def test_register_cases_needs_a_registered_op():
    with pytest.raises(KeyError, match="no registered op named 'tahn' \\(did you mean 'tanh'"):
        register_cases("tahn")


def test_unknown_names_are_key_errors():
    with pytest.raises(KeyError, match="no registered op named 'rleu' \\(did you mean 'relu'"):
        check_op("rleu")


# ---- ops without cases: check_op infers them from forward's signature -----------------------------------
class _Blend(mg.Function, register=False):
    """a * |b| + max(a, c) * scale: three array inputs, a defaulted attribute, kinks at b = 0 and a = c."""

    name = "test_blend"
    wrong = False  # True: the gradient of c is forgotten where c is the maximum

    @staticmethod
    def forward(ctx, a, b, c, scale=2.0):
        ctx.save_for_backward(a, b, c, scale)
        return a * np.abs(b) + np.maximum(a, c) * scale

    @staticmethod
    def backward(ctx, grad):
        a, b, c, scale = ctx.saved_tensors
        a_wins = a > c
        dc = np.zeros_like(c) if _Blend.wrong else grad * scale * ~a_wins
        return grad * (np.abs(b) + scale * a_wins), grad * a * np.sign(b), dc


def test_a_users_op_without_cases_is_checked_on_cases_inferred_from_forward(monkeypatch):
    check_op(_Blend, max_examples=30)  # right backward: passes, no b near 0 and no tie of a and c drawn
    check_op(_Blend, max_examples=5, max_side=1, max_dims=1)  # overrides go to default_cases

    monkeypatch.setattr(_Blend, "wrong", True)
    want = r"check_op\('test_blend'\): gradcheck: gradient of input 2"
    with pytest.raises(GradcheckError, match=want) as err:
        check_op(_Blend, max_examples=30)
    message = str(err.value)
    assert "inputs: Tensor float64 (1,) requires_grad, Tensor float64 (1,) requires_grad, Tensor" in message
    assert "inferred these cases from _Blend.forward(ctx, a, b, c)" in message  # scale keeps its default
    assert "pass cases=" in message


def test_a_private_op_shadowing_a_builtin_name_is_not_checked_with_the_builtin_cases():
    class MyTanh(mg.Function, register=False):
        name = "tanh"  # same name as the built-in: OP_CASES["tanh"] would test the built-in, not this

        @staticmethod
        def forward(ctx, x):
            return np.tanh(x)

        @staticmethod
        def backward(ctx, grad):
            return (grad,)  # wrong

    # OP_CASES["tanh"] would check the built-in (and pass): MyTanh gets inferred cases of its own
    with pytest.raises(GradcheckError, match=r"check_op\('tanh'\).*\n.*\n.*MyTanh\.forward\(ctx, x\)"):
        check_op(MyTanh, max_examples=10)


def _op_with_forward(forward):
    return type("Odd", (mg.Function,), {"name": "test_odd", "forward": staticmethod(forward),
                                        "backward": staticmethod(lambda ctx, grad: (grad,))}, register=False)


@pytest.mark.parametrize(
    ("forward", "why"),
    [
        (lambda ctx, x, *, weight: x * weight, "has a keyword-only argument 'weight' without a default"),
        (lambda ctx, *xs: sum(xs), r"takes \*xs, so the number of its array inputs is unknown"),
        (lambda ctx, scale=1.0: scale, "takes no array input"),
        (lambda *, ctx: ctx, "does not take ctx as its first argument"),
    ],
)
def test_cases_that_cannot_be_inferred_are_a_clear_error_naming_the_op(forward, why):
    head = r"check_op\('test_odd'\): no cases given and none can be inferred: "
    want = head + rf"Odd\.forward {why}.*; pass cases="
    with pytest.raises(KeyError, match=want):
        check_op(_op_with_forward(forward))


class _MatMul2d(mg.Function, register=False):
    """(n, k) @ (k, m) of 2-d arrays only: one shared shape of (2, 3), or 1-d inputs, are refused."""

    name = "test_matmul2d"

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.einsum("ij,jk->ik", a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        return grad @ b.T, a.T @ grad


def test_an_op_refusing_the_inferred_inputs_says_where_they_came_from():
    with pytest.raises(ValueError, match="test_matmul2d") as err:
        check_op(_MatMul2d, max_examples=50)
    notes = "\n".join(err.value.__notes__)
    assert "check_op('test_matmul2d') inferred these cases from _MatMul2d.forward(ctx, a, b)" in notes
    assert "pass cases=" in notes
    square = tensors(shape=(2, 2))
    check_op(_MatMul2d, max_examples=5, cases=st.tuples(square, square))  # cases= for structured inputs
    with pytest.raises(TypeError, match=r"check_op\('test_matmul2d'\): the cases inferred .* not \['side'\]"):
        check_op(_MatMul2d, side=2)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(TypeError, match="name must be an op name or a Function subclass"):
        check_op(42)
    with pytest.raises(TypeError, match="cases must be a strategy or a factory of one"):
        check_op("tanh", cases=[1, 2])
    with pytest.raises(ValueError, match="max_examples must be a positive int or None"):
        check_op("tanh", max_examples=0)
    with pytest.raises(TypeError, match="a case must be an OpCase"):
        check_op("tanh", max_examples=1, cases=st.just("x"))


def test_max_examples_bounds_the_examples_run():
    seen = []

    def count(t):
        seen.append(t)
        return t

    check_op("neg", max_examples=4, cases=tensors(shape=(2,)).map(count))
    assert 1 <= len(seen) <= 4
    seen.clear()
    check_op("neg", max_examples=None, cases=tensors(shape=(2,)).map(count))  # the loaded profile's count
    assert 4 < len(seen) <= settings.default.max_examples
