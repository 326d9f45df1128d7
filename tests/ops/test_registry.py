import numpy as np
import pytest
from hypothesis import given

import microgradcnn as mg
from microgradcnn.testing import GradcheckError, check_op, gradcheck, gradgradcheck
from microgradcnn.testing.strategies import COMPOSED_CASES, OP_CASES

BUILTIN_OPS = sorted(name for name, fn in mg.REGISTRY.items() if fn.__module__.startswith("microgradcnn."))


def test_every_builtin_op_has_a_strategy():
    missing = set(BUILTIN_OPS) - set(OP_CASES)
    assert not missing, f"ops without a strategy in testing/strategies.OP_CASES: {sorted(missing)}"


def test_every_strategy_names_a_registered_op():
    assert set(OP_CASES) <= set(mg.REGISTRY)


@pytest.mark.parametrize("name", BUILTIN_OPS)
def test_backward_matches_central_differences(name):
    check_op(name, max_examples=None)  # the hypothesis profile decides how many


class _WrongTanh(mg.Function, register=False):
    """tanh with the derivative of sigmoid's shape: right shape, wrong values."""

    name = "wrong_tanh"

    @staticmethod
    def forward(ctx, x):
        out = np.tanh(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        return (grad * out * (1 - out),)


def test_gradcheck_rejects_a_wrong_backward():
    x = mg.Tensor(np.linspace(-1, 1, 6).reshape(2, 3), requires_grad=True)
    with pytest.raises(GradcheckError, match=r"input 0 .*index"):
        gradcheck(_WrongTanh.apply, [x])


def test_gradcheck_rejects_a_missing_gradient():
    class NoGrad(mg.Function, register=False):
        name = "no_grad_exp"

        @staticmethod
        def forward(ctx, x):
            return np.exp(x)

        @staticmethod
        def backward(ctx, grad):
            return (None,)

    with pytest.raises(GradcheckError, match="analytic 0"):
        gradcheck(NoGrad.apply, [mg.Tensor([0.5, 1.0], requires_grad=True)])


def test_gradcheck_accepts_right_backward_and_leaves_inputs_untouched():
    data = np.array([[0.3, -0.2], [0.1, 0.7]], dtype=np.float32)
    x = mg.Tensor(data.copy(), requires_grad=True)
    assert gradcheck(lambda t: (t @ t).tanh(), [x]) is True
    np.testing.assert_array_equal(x.data, data)
    assert x.grad is None


@pytest.mark.parametrize("name", sorted(COMPOSED_CASES))
def test_composed_ops_are_twice_differentiable(name):
    """Ops composed from registered ones (min, minimum, squeeze, ...) have no check_op second-order pass of
    their own: their second derivatives, through the ops they record, against central differences."""

    @given(case=COMPOSED_CASES[name]())
    def check(case):
        gradgradcheck(case.fn, case.inputs)

    check()
