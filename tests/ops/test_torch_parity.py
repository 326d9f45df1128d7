"""Forward values and gradients equal PyTorch's (float64, 1e-5) for every CNN op, where torch is installed."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import microgradcnn as mg
from microgradcnn import functional as F
from microgradcnn.testing.strategies import arrays, class_targets, conv2d_configs, pool2d_configs, shapes

torch = pytest.importorskip("torch")
TF = torch.nn.functional
TOL = {"rtol": 1e-5, "atol": 1e-5}


def _both(ours, theirs, arrays_in, grad_seed=0):
    """Run ``ours`` on Tensors and ``theirs`` on torch tensors made from the same float64 arrays (None stays
    None), backpropagate the same random output gradient, and compare the outputs and every input gradient."""
    arrays_in = [None if a is None else np.asarray(a, np.float64) for a in arrays_in]
    mine = [None if a is None else mg.Tensor(a, requires_grad=True) for a in arrays_in]
    ref = [None if a is None else torch.tensor(a, requires_grad=True) for a in arrays_in]
    out, tout = ours(*mine), theirs(*ref)
    g = np.random.default_rng(grad_seed).standard_normal(out.shape)
    out.backward(g)
    tout.backward(torch.tensor(g))
    assert out.shape == tuple(tout.shape)
    np.testing.assert_allclose(out.data, tout.detach().numpy(), **TOL)
    for m, r in zip(mine, ref, strict=True):
        if m is not None:
            np.testing.assert_allclose(m.grad, r.grad.numpy(), **TOL)


@given(cfg=conv2d_configs())
def test_conv2d_equals_torch(cfg):
    attrs = {k: cfg[k] for k in ("stride", "padding", "dilation", "groups")}
    _both(lambda x, w, b: F.conv2d(x, w, b, **attrs), lambda x, w, b: TF.conv2d(x, w, b, **attrs),
          [cfg["x"], cfg["weight"], cfg["bias"]])


@pytest.mark.parametrize("name", ["max_pool2d", "avg_pool2d"])
@given(cfg=pool2d_configs(distinct=False), ties=st.booleans())
def test_pools_equal_torch_with_ties_and_padding(name, cfg, ties):
    x = np.round(cfg["x"]) if ties else cfg["x"]  # rounded values in [-2, 2]: windows full of ties
    args = (cfg["kernel_size"], cfg["stride"], cfg["padding"])
    _both(lambda t: getattr(F, name)(t, *args), lambda t: getattr(TF, name)(t, *args), [x])


@given(data=st.data())
def test_linear_equals_torch(data):
    lead = tuple(data.draw(st.lists(st.integers(1, 3), max_size=2)))
    fan_in, fan_out = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6))
    x, w = data.draw(arrays((*lead, fan_in))), data.draw(arrays((fan_out, fan_in)))
    b = data.draw(st.none() | arrays((fan_out,)))
    _both(F.linear, TF.linear, [x, w, b])


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@given(data=st.data())
def test_softmaxes_equal_torch(name, data):
    shape = data.draw(shapes(min_dims=0))  # a 0-d tensor too: one element, softmax 1 and log_softmax 0
    ndim = len(shape) or 1  # PyTorch takes dim 0 or -1 for a 0-d tensor
    axis = data.draw(st.integers(-ndim, ndim - 1))
    x = data.draw(arrays(shape, st.floats(-30, 30)))
    _both(lambda t: getattr(F, name)(t, axis=axis), lambda t: getattr(TF, name)(t, dim=axis), [x])


@pytest.mark.parametrize("p", [0.0, 1.0, 2.0, 3.0, -1.0, 0.5, 2.5])
def test_pow_equals_torch_at_zero_and_around_it(p):
    x = np.array([0.0, 1.0, 2.0, 0.5, -1.5, -2.0])
    with np.errstate(divide="ignore", invalid="ignore"):  # 0 ** -1 is inf and (-1.5) ** 0.5 NaN, in both
        _both(lambda t: t**p, lambda t: t**p, [x])


@given(data=st.data())
def test_max_equals_torch_with_ties(data):
    """A full max splits a tie evenly (torch.max(x)); max over one axis routes to the first maximum
    (torch.max(x, dim))."""
    shape = data.draw(shapes(min_dims=1))
    x = np.round(data.draw(arrays(shape, st.floats(-1.5, 1.5))))  # values in {-2, ..., 2}: many ties
    _both(lambda t: t.max(), torch.max, [x])
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    keep = data.draw(st.booleans())
    theirs = lambda t: torch.max(t, dim=axis, keepdim=keep).values  # noqa: E731
    _both(lambda t: t.max(axis=axis, keepdims=keep), theirs, [x])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@given(data=st.data(), eps=st.sampled_from([0.0, 0.05, 0.3, 1.0]), scale=st.sampled_from([1.0, 100.0, 1e4]))
def test_cross_entropy_equals_torch(reduction, data, eps, scale):
    n, c = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 6))
    logits = data.draw(arrays((n, c), st.floats(-1, 1))) * scale  # up to +-1e4: stability counts too
    target = data.draw(class_targets(n, c))
    kw = {"reduction": reduction, "label_smoothing": eps}
    theirs = lambda t: TF.cross_entropy(t, torch.tensor(target), **kw)  # noqa: E731
    _both(lambda t: F.cross_entropy(t, target, **kw), theirs, [logits])
