"""gradcheck: both modes catch wrong backwards, float64 copies, pass-through inputs, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

import microgradcnn as mg
from microgradcnn.testing import GradcheckError, gradcheck
from microgradcnn.testing.gradcheck import FULL_JACOBIAN_MAX_OUTPUTS


class _SquareOffByOne(mg.Function, register=False):
    """x**2 whose backward is right everywhere except flat element WRONG_AT, where it adds 1."""

    name = "square_off_by_one"
    WRONG_AT = 5

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        dx = 2 * x * grad
        dx.reshape(-1)[_SquareOffByOne.WRONG_AT] += grad.reshape(-1)[_SquareOffByOne.WRONG_AT]
        return (dx,)


class _MulWrongRight(mg.Function, register=False):
    """a * b with the right gradient for a and twice the right one for b."""

    name = "mul_wrong_right"

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        return grad * b, 2 * grad * a


def _grid(shape, dtype=np.float64):
    data = np.linspace(0.3, 1.7, int(np.prod(shape)), dtype=dtype).reshape(shape)
    return mg.Tensor(data, requires_grad=True)


def test_full_jacobian_mode_names_output_element_and_worst_index():
    x = _grid((2, 3))  # 6 outputs: the full Jacobian, one backward per output element
    assert x.size <= FULL_JACOBIAN_MAX_OUTPUTS
    want = r"input 0 \(shape \(2, 3\)\) of output element \(1, 2\) is wrong at index \(1, 2\).*1 of 6 el"
    with pytest.raises(GradcheckError, match=want):
        gradcheck(_SquareOffByOne.apply, [x])


def test_projection_mode_catches_a_single_wrong_element():
    x = _grid((4, 5))  # 20 outputs: one random projection
    assert x.size > FULL_JACOBIAN_MAX_OUTPUTS
    with pytest.raises(GradcheckError, match=r"random projection of the output is wrong at index \(1, 0\)"):
        gradcheck(_SquareOffByOne.apply, [x])


@pytest.mark.parametrize("shape", [(3,), (3, 4)], ids=["full", "projection"])
def test_the_right_gradient_passes_in_both_modes(shape):
    assert gradcheck(lambda t: t * t, [_grid(shape)]) is True


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_any_seed_catches_a_wrong_gradient(seed):
    with pytest.raises(GradcheckError):
        gradcheck(_SquareOffByOne.apply, [_grid((4, 5))], seed=seed)


def test_names_the_input_whose_gradient_is_wrong():
    a, b = _grid((2, 2)), _grid((2, 2))
    with pytest.raises(GradcheckError, match=r"gradient of input 1 "):
        gradcheck(_MulWrongRight.apply, [a, b])
    # With b constant only a is checked, and a's gradient is right.
    assert gradcheck(_MulWrongRight.apply, [a, mg.Tensor(b.data)]) is True


def test_float32_inputs_are_checked_in_float64_and_left_untouched():
    data = np.array([[0.3, -0.2], [0.1, 0.7]], dtype=np.float32)
    x = mg.Tensor(data.copy(), requires_grad=True)
    seen = []

    def fn(t):
        seen.append(t.dtype)
        return (t @ t).tanh()

    assert gradcheck(fn, [x]) is True
    assert set(seen) == {np.dtype(np.float64)}
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x.data, data)
    assert x.grad is None


def test_non_tensor_inputs_pass_through_unchanged():
    labels = np.array([2, 0, 1])
    scale = 3.0
    received = []

    def fn(t, idx, s, tag):
        received.append((idx, s, tag))
        return t[idx] * s

    assert gradcheck(fn, [_grid((3,)), labels, scale, "tag"]) is True
    assert all(idx is labels and s is scale and tag == "tag" for idx, s, tag in received)


def test_a_single_tensor_may_stand_for_the_inputs():
    assert gradcheck(lambda t: t.exp(), _grid((2,))) is True


def test_fn_returning_a_non_tensor_is_a_type_error():
    with pytest.raises(TypeError, match="fn must return a Tensor, got ndarray"):
        gradcheck(lambda t: t.data * 2, [_grid((2,))])


def test_nothing_to_check_is_an_error_not_a_silent_pass():
    with pytest.raises(ValueError, match="no input is a Tensor with requires_grad=True"):
        gradcheck(lambda t: t * 2, [mg.Tensor([1.0, 2.0])])


def test_eps_must_be_positive():
    with pytest.raises(ValueError, match="eps must be positive"):
        gradcheck(lambda t: t * 2, [_grid((2,))], eps=0.0)


def test_float32_arithmetic_inside_fn_fails_with_a_hint():
    class Float32Exp(mg.Function, register=False):
        name = "float32_exp"

        @staticmethod
        def forward(ctx, x):
            out = np.exp(x.astype(np.float32))  # float32: eps-sized steps drown in rounding
            ctx.save_for_backward(out)
            return out

        @staticmethod
        def backward(ctx, grad):
            (out,) = ctx.saved_tensors
            return (grad * out,)

    with pytest.raises(GradcheckError, match="fn returned float32 for float64 inputs"):
        gradcheck(Float32Exp.apply, [_grid((3,))])


def test_non_finite_analytic_gradient_fails():
    class NanGrad(mg.Function, register=False):
        name = "nan_grad"

        @staticmethod
        def forward(ctx, x):
            return x * 1.0

        @staticmethod
        def backward(ctx, grad):
            return (grad * np.nan,)

    with pytest.raises(GradcheckError, match="analytic nan"):
        gradcheck(NanGrad.apply, [_grid((2,))])


def test_an_unused_input_has_zero_gradient_and_passes():
    assert gradcheck(lambda a, b: a * 2, [_grid((2,)), _grid((3,))]) is True


# ---- gradgradcheck -----------------------------------------------------------------------------------------
class _CubeSavedAsConstant(mg.Function, register=False):
    """x**3 whose first derivative is right, but whose backward saves a copy of x: under create_graph the
    copy stays a constant, so the second derivative misses the 6 x term."""

    name = "cube_saved_as_constant"
    differentiable_backward = True

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x.copy())  # derived, not the input itself
        return x * x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return (3 * x * x * grad,)


class _Cube(mg.Function, register=False):
    """x**3, written by the contract: the input itself saved, backward made of Tensor operators."""

    name = "cube"
    differentiable_backward = True

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return (3 * x * x * grad,)


def test_gradgradcheck_passes_a_twice_differentiable_op():
    from microgradcnn.testing import gradgradcheck

    x = mg.Tensor(np.array([[0.5, -1.2], [2.0, 0.3]]), requires_grad=True)
    assert gradcheck(_Cube.apply, [x])
    assert gradgradcheck(_Cube.apply, [x])
    assert gradgradcheck(_Cube.apply, [x], grad_outputs=np.ones((2, 2)))


def test_gradgradcheck_catches_a_backward_that_treats_a_saved_input_as_a_constant():
    from microgradcnn.testing import gradgradcheck

    x = mg.Tensor(np.array([0.5, -1.2, 2.0]), requires_grad=True)
    assert gradcheck(_CubeSavedAsConstant.apply, [x])  # first order cannot see it
    with pytest.raises(GradcheckError, match=r"gradgradcheck: gradient of input 0 \(shape \(3,\)\).* index"):
        gradgradcheck(_CubeSavedAsConstant.apply, [x])


def test_gradgradcheck_names_grad_outputs_when_the_vjp_is_wrong_in_the_seed():
    from microgradcnn.testing import gradgradcheck

    class Twice(mg.Function, register=False):  # right values, but the seed is cut from the graph
        name = "twice_detached_seed"
        differentiable_backward = True

        @staticmethod
        def forward(ctx, x):
            return 2 * x

        @staticmethod
        def backward(ctx, grad):
            return (2 * (grad.data if isinstance(grad, mg.Tensor) else grad),)

    x = mg.Tensor(np.array([0.5, -1.0]), requires_grad=True)
    with pytest.raises(GradcheckError, match="grad_outputs"):
        gradgradcheck(Twice.apply, [x], grad_outputs=np.array([1.0, 1.0]))


def test_gradgradcheck_checks_its_arguments():
    from microgradcnn.testing import gradgradcheck

    x = mg.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    with pytest.raises(ValueError, match="grad_outputs has shape"):
        gradgradcheck(_Cube.apply, [x], grad_outputs=np.ones(3))
    with pytest.raises(ValueError, match="nothing to check"):
        gradgradcheck(_Cube.apply, [mg.Tensor([1.0])])
    with pytest.raises(ValueError, match="eps must be positive"):
        gradgradcheck(_Cube.apply, [x], eps=0.0)
    x32 = mg.Tensor(np.array([1.0, 2.0], dtype=np.float32), requires_grad=True)
    assert gradgradcheck(_Cube.apply, [x32])
    assert x32.grad is None
    assert x32.dtype == np.float32
