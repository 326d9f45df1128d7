"""erf gelu leaky_relu elu softplus: erf's accuracy, gradient checks, PyTorch parity, argument checks."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import microgradcnn as mg
from microgradcnn import functional as F
from microgradcnn.ops.activation import GeluFn, erf_array, erfc_array
from microgradcnn.testing import GradcheckError, check_op, gradcheck
from microgradcnn.testing.strategies import arrays, shapes

OPS = ["erf", "gelu", "leaky_relu", "elu", "softplus"]


def test_erf_matches_math_erf_to_1e_15_on_many_points():
    split = [2.5, np.nextafter(2.5, 0)]  # either side of the switch from series to continued fraction
    x = np.concatenate([np.linspace(-9, 9, 200_001), np.geomspace(1e-300, 1, 2001), split])
    x = np.concatenate([x, -x])
    ref = np.array([math.erf(v) for v in x])
    err = np.abs(erf_array(x) - ref)
    assert err.max() < 2e-15
    tiny = (np.abs(x) < 1e-3) & (x != 0)  # relative accuracy too where erf itself is small
    assert (err[tiny] / np.abs(ref[tiny])).max() < 1e-15


def test_erfc_keeps_relative_accuracy_in_the_tail():
    x = np.linspace(2.5, 26, 50_001)
    ref = np.array([math.erfc(v) for v in x])
    assert (np.abs(erfc_array(x) - ref) / ref).max() < 1e-13  # erfc(26) ~ 1e-296, not 0
    y = np.linspace(-6, 2.5, 20_001)
    assert np.abs(erfc_array(y) - np.array([math.erfc(v) for v in y])).max() < 2e-15


def test_erf_special_values_dtypes_and_shapes():
    out = erf_array(np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e300]))
    np.testing.assert_array_equal(out[[0, 2, 3, 5]], [0.0, 1.0, -1.0, 1.0])
    assert np.signbit(out[1])
    assert np.isnan(out[4])
    assert erf_array(np.zeros((2, 3), np.float32)).dtype == np.float32
    assert erf_array(np.array([1, 2])).dtype == np.float64
    assert erf_array(np.float64(0.5)).shape == ()
    f32 = np.linspace(-4, 4, 1001, dtype=np.float32)
    np.testing.assert_allclose(erf_array(f32), [math.erf(v) for v in f32], atol=1e-6)


@pytest.mark.parametrize("name", OPS)
def test_backward_matches_central_differences(name):
    check_op(name, max_examples=30)


def test_the_gradient_check_catches_a_wrong_gelu_backward():
    class HalfGelu(GeluFn, register=False):  # drops the x * pdf term
        name = "half_gelu"

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return (grad * (F.erf(mg.Tensor(x * 0.7071067811865476)).data * 0.5 + 0.5),)

    x = mg.Tensor(np.linspace(-2, 2, 7), requires_grad=True)
    gradcheck(GeluFn.apply, [x])
    with pytest.raises(GradcheckError):
        gradcheck(HalfGelu.apply, [x])


def test_leaky_relu_at_zero_takes_the_slope_and_elu_is_continuous():
    x = mg.Tensor(np.array([-1.0, 0.0, 2.0]), requires_grad=True)
    F.leaky_relu(x, 0.1).sum().backward()
    np.testing.assert_array_equal(x.grad, [0.1, 0.1, 1.0])  # PyTorch: the slope at x = 0
    np.testing.assert_allclose(F.elu(mg.Tensor(np.array([-1e-12, 1e-12]))).data, [-1e-12, 1e-12], atol=1e-20)


def test_softplus_is_stable_and_switches_to_linear_above_the_threshold():
    out = F.softplus(mg.Tensor(np.array([-800.0, 0.0, 25.0, 800.0])))
    np.testing.assert_allclose(out.data, [0.0, math.log(2), 25.0, 800.0])
    x = mg.Tensor(np.array([-800.0, 800.0]), requires_grad=True)
    with mg.detect_anomaly():
        F.softplus(x).sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 1.0])


def test_float32_stays_float32():
    x = mg.Tensor(np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4), requires_grad=True)
    for name in OPS:
        out = getattr(F, name)(x)
        out.sum().backward()
        assert out.dtype == x.grad.dtype == np.float32, name


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda x: F.leaky_relu(x, "0.1"), "leaky_relu: negative_slope must be a finite real number"),
        (lambda x: F.elu(x, float("nan")), "elu: alpha must be a finite real number"),
        (lambda x: F.softplus(x, 0.0), "softplus: beta must be positive"),
        (lambda x: F.softplus(x, 1.0, float("inf")), "softplus: threshold must be a finite"),
        (lambda x: F.gelu(x, "exact"), "gelu: approximate must be 'none' or 'tanh'"),
    ],
)
def test_bad_arguments_name_the_op(call, message):
    with pytest.raises(ValueError, match=message):
        call(mg.Tensor(np.ones(2)))


# ---- PyTorch parity (float64) --------------------------------------------------------------------------
torch_cases = [
    ("erf", {}, "erf"),
    ("gelu", {}, "gelu"),
    ("gelu", {"approximate": "tanh"}, "gelu"),
    ("leaky_relu", {"negative_slope": 0.2}, "leaky_relu"),
    ("leaky_relu", {}, "leaky_relu"),
    ("elu", {"alpha": 0.7}, "elu"),
    ("elu", {}, "elu"),
    ("softplus", {"beta": 2.0, "threshold": 3.0}, "softplus"),
    ("softplus", {}, "softplus"),
]


@pytest.mark.parametrize(("name", "kwargs", "torch_name"), torch_cases)
@given(x=arrays(shapes(min_dims=1), st.floats(-30, 30)))
def test_forward_and_gradient_equal_torch(name, kwargs, torch_name, x):
    torch = pytest.importorskip("torch")
    theirs = getattr(torch, torch_name) if name == "erf" else getattr(torch.nn.functional, torch_name)
    t, tt = mg.Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out, tout = getattr(F, name)(t, **kwargs), theirs(tt, **kwargs)
    g = np.random.default_rng(0).standard_normal(x.shape)
    out.backward(g)
    tout.backward(torch.from_numpy(g))
    np.testing.assert_allclose(out.data, tout.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(t.grad, tt.grad.numpy(), rtol=1e-12, atol=1e-14)
