"""The strategies' own properties: shapes broadcast, configs give outputs, values keep away from kinks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import microgradcnn as mg
from microgradcnn import functional as F
from microgradcnn.testing.strategies import (
    MAX_SIDE,
    away_from_zero,
    axes,
    broadcastable_shapes,
    class_targets,
    conv2d_configs,
    conv_transpose2d_configs,
    default_cases,
    distinct_arrays,
    floats,
    pool2d_args,
    pool2d_configs,
    shapes,
    tensors,
)

# The properties are cheap to check; 50 examples each keep this file at a few seconds.
fast = settings(max_examples=50, deadline=None)


def _min_gap(values: np.ndarray) -> float:
    flat = np.sort(values.reshape(-1))
    return float(np.min(np.diff(flat))) if flat.size > 1 else np.inf


@fast
@given(t=tensors())
def test_tensors_by_default_are_small_float64_leaves_in_range(t):
    assert isinstance(t, mg.Tensor)
    assert t.dtype == np.float64
    assert t.requires_grad
    assert t.is_leaf
    assert t.ndim <= 3
    assert all(1 <= side <= MAX_SIDE for side in t.shape)
    assert np.all(np.abs(t.data) <= 2.0)


@fast
@given(t=tensors(shape=(2, 3), dtype=np.float32, elements=floats(0.5, 1.0), requires_grad=False))
def test_tensors_honour_shape_dtype_elements_and_requires_grad(t):
    assert t.shape == (2, 3)
    assert t.dtype == np.float32
    assert not t.requires_grad
    assert np.all((t.data >= 0.5) & (t.data <= 1.0))


@fast
@given(
    data=st.data(), spacing=st.sampled_from([0.05, 0.1, 0.5]), dtype=st.sampled_from([np.float32, np.float64])
)
def test_tensors_avoiding_kinks_keep_every_value_and_every_pair_spacing_apart(data, spacing, dtype):
    t = data.draw(tensors(dtype=dtype, avoid_kinks=True, spacing=spacing))
    assert t.dtype == dtype
    tol = 1e-6 * spacing  # float32 rounding of the drawn values
    assert np.all(np.abs(t.data) >= spacing - tol), "relu/abs kink at 0"
    assert _min_gap(t.data) >= spacing - tol, "a tie for max"


@fast
@given(data=st.data(), n=st.integers(1, 3))
def test_default_cases_are_float64_leaves_of_one_shape_spaced_apart_across_inputs(data, n):
    inputs = data.draw(default_cases(n))
    assert len(inputs) == n
    assert all(isinstance(t, mg.Tensor) and t.is_leaf and t.requires_grad for t in inputs)
    assert all(t.dtype == np.float64 for t in inputs)
    assert len({t.shape for t in inputs}) == 1  # one shared shape: elementwise ops accept them
    assert 1 <= inputs[0].ndim <= 2
    assert all(1 <= side <= 3 for side in inputs[0].shape)
    values = np.stack([t.data for t in inputs])
    assert np.all(np.abs(values) >= 0.1), "a kink at 0"
    assert _min_gap(values) >= 0.1, "a tie between two values, also of different inputs (max(x, y))"
    if n > 1:  # separate arrays: gradcheck perturbing one input must not move another
        assert not np.shares_memory(inputs[0].data, inputs[1].data)


def test_default_cases_honour_their_arguments_and_refuse_bad_counts():
    from hypothesis import find

    (t,) = find(default_cases(1, min_dims=3, max_dims=3, max_side=1, spacing=0.5), lambda case: True)
    assert t.shape == (1, 1, 1)
    assert abs(t.item()) >= 0.5
    with pytest.raises(ValueError, match="default_cases: num_inputs must be at least 1"):
        default_cases(0)
    with pytest.raises(TypeError, match="default_cases: num_inputs must be an int"):
        default_cases(2.0)


def test_tensors_avoiding_kinks_refuse_elements():
    with pytest.raises(ValueError, match="avoid_kinks"):
        tensors(elements=floats(), avoid_kinks=True)
    with pytest.raises(ValueError, match="spacing"):
        tensors(avoid_kinks=True, spacing=0.0)


@fast
@given(shape=shapes(min_dims=1), data=st.data())
def test_distinct_arrays_have_no_near_ties(shape, data):
    a = data.draw(distinct_arrays(shape, spacing=0.25))
    assert a.shape == shape
    assert _min_gap(a) >= 0.25 - 1e-12


@fast
@given(value=away_from_zero(0.3, 1.5))
def test_away_from_zero_keeps_its_band(value):
    assert 0.3 <= abs(value) <= 1.5


@fast
@given(pair=broadcastable_shapes())
def test_broadcastable_shapes_broadcast(pair):
    a, b = pair
    out = np.broadcast_shapes(a, b)
    assert (np.zeros(a) + np.zeros(b)).shape == out
    assert len(out) <= 3


@fast
@given(triple=broadcastable_shapes(num_shapes=3, max_dims=2, max_side=2))
def test_broadcastable_shapes_honour_their_arguments(triple):
    assert len(triple) == 3
    assert all(len(s) <= 2 and all(side <= 2 for side in s) for s in triple)
    np.broadcast_shapes(*triple)


@fast
@given(data=st.data(), ndim=st.integers(0, 4))
def test_axes_are_valid_for_their_ndim(data, ndim):
    axis = data.draw(axes(ndim))
    np.sum(np.zeros((2,) * ndim), axis=axis)  # raises for an invalid or repeated axis


@fast
@given(config=conv2d_configs())
def test_conv2d_configs_always_give_a_non_empty_output_of_the_documented_size(config):
    x, weight = config["x"], config["weight"]
    out = F.conv2d(**config)
    oc, kernel = weight.shape[0], weight.shape[2:]
    stride, padding, dilation = (np.broadcast_to(config[k], 2) for k in ("stride", "padding", "dilation"))
    span = dilation * (np.asarray(kernel) - 1) + 1  # the dilated kernel's extent
    want = (np.asarray(x.shape[2:]) + 2 * padding - span) // stride + 1
    assert out.shape == (x.shape[0], oc, *map(int, want))
    assert min(out.shape) >= 1
    assert x.shape[1] == weight.shape[1] * config["groups"]
    assert oc % config["groups"] == 0
    assert config["bias"] is None or config["bias"].shape == (oc,)


@fast
@given(config=conv_transpose2d_configs())
def test_conv_transpose2d_configs_are_accepted_with_a_non_empty_output(config):
    out = F.conv_transpose2d(**config)  # raises for any argument combination PyTorch refuses
    assert min(out.shape) >= 1
    names = ("stride", "output_padding", "dilation")
    stride, extra, dilation = (np.broadcast_to(config[k], 2) for k in names)
    assert np.all(extra < np.maximum(stride, dilation))


@fast
@given(config=pool2d_configs())
def test_pool2d_configs_give_outputs_and_max_pool_windows_without_ties(config):
    out = F.max_pool2d(config["x"], **pool2d_args("max_pool2d", config))  # raises for what PyTorch refuses
    assert min(out.shape) >= 1
    assert min(F.avg_pool2d(config["x"], **pool2d_args("avg_pool2d", config)).shape) >= 1
    assert _min_gap(config["x"]) >= 0.1 - 1e-12  # distinct by default: no tie in any window


@fast
@given(n=st.integers(1, 6), num_classes=st.integers(1, 5), data=st.data())
def test_class_targets_are_int64_indices_in_range(n, num_classes, data):
    labels = data.draw(class_targets(n, num_classes))
    assert labels.dtype == np.int64
    assert labels.shape == (n,)
    assert np.all((labels >= 0) & (labels < num_classes))
