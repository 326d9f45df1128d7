"""pow's gradient at the points where the textbook rule p * x ** (p - 1) would compute 0 * inf."""

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
