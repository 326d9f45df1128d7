"""Elementwise ops at their edge points: pow where p * x ** (p - 1) would compute 0 * inf, abs, sqrt and clip
at their kinks, bounds and poles (as PyTorch)."""

import numpy as np
import pytest

import microgradcnn as mg


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_x_to_the_zero_has_gradient_zero_everywhere_even_at_zero(dtype):
    x = mg.Tensor(np.array([0.0, -0.0, 2.0, -3.0, np.inf], dtype), requires_grad=True)
    (x**0).sum().backward()
    np.testing.assert_array_equal((x**0).data, 1)
    np.testing.assert_array_equal(x.grad, 0)  # d/dx 1 = 0; not 0 * 0 ** -1 = 0 * inf = NaN
    assert x.grad.dtype == dtype


@pytest.mark.parametrize(("p", "want"), [(1.0, [1, 1, 1]), (2.0, [0, 4, -2]), (3.0, [0, 12, 3])])
def test_small_integer_powers_are_finite_at_zero(p, want):
    x = mg.Tensor([0.0, 2.0, -1.0], requires_grad=True)
    (x**p).sum().backward()
    np.testing.assert_array_equal(x.grad, want)


def test_abs_has_gradient_zero_at_zero_and_sign_elsewhere():
    x = mg.Tensor([-2.0, -0.0, 0.0, 3.0, np.nan], requires_grad=True)
    out = x.abs()
    np.testing.assert_array_equal(out.data, [2, 0, 0, 3, np.nan])
    out.sum().backward()
    np.testing.assert_array_equal(x.grad, [-1, 0, 0, 1, 0])


def test_sqrt_has_an_infinite_gradient_at_zero_without_warnings():
    x = mg.Tensor([0.0, 4.0, -1.0], requires_grad=True)
    out = x.sqrt()
    np.testing.assert_array_equal(out.data, [0, 2, np.nan])
    out.sum().backward()
    np.testing.assert_array_equal(x.grad, [np.inf, 0.25, np.nan])


@pytest.mark.parametrize(
    ("low", "high", "out", "grad"),
    [
        (0.0, 1.0, [0, 0, 0.5, 1, 1, np.nan], [0, 1, 1, 1, 0, 0]),  # the bounds pass the gradient
        (None, 1.0, [-1, 0, 0.5, 1, 1, np.nan], [1, 1, 1, 1, 0, 0]),
        (0.0, None, [0, 0, 0.5, 1, 2, np.nan], [0, 1, 1, 1, 1, 0]),
        (1.0, 0.0, [0, 0, 0, 0, 0, np.nan], [0, 0, 0, 0, 0, 0]),  # min > max: every value is max
    ],
)
def test_clip_passes_the_gradient_inside_the_bounds_inclusive(low, high, out, grad):
    x = mg.Tensor([-1.0, 0.0, 0.5, 1.0, 2.0, np.nan], requires_grad=True)
    y = x.clip(low, high)
    np.testing.assert_array_equal(y.data, out)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, grad)


def test_clip_keeps_float32():
    assert mg.Tensor(np.ones(2, np.float32)).clip(0, 0.5).dtype == np.float32


@pytest.mark.parametrize(
    ("args", "error", "pattern"),
    [
        ((None, None), ValueError, r"^clip: at least one of min and max must not be None$"),
        (("0", None), TypeError, r"^clip: min must be a real number or None, got '0' \(str\)$"),
        ((0, True), TypeError, r"^clip: max must be a real number or None, got True \(bool\)$"),
    ],
)
def test_bad_clip_bounds_name_the_op(args, error, pattern):
    with pytest.raises(error, match=pattern):
        mg.Tensor([1.0]).clip(*args)
