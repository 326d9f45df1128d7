"""Forward values and gradients equal PyTorch's (float64, 1e-5) for every CNN op, where torch is installed."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import microgradcnn as mg
from microgradcnn import functional as F
from microgradcnn.testing.strategies import (
    arrays,
    axes,
    class_targets,
    conv2d_configs,
    pool2d_configs,
    shapes,
)

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


# ---- the tensor ops: cat stack where maximum minimum abs sqrt clip, shape ops, logsumexp var std min argmax
def _dims(axis, ndim):
    """Our ``axis`` (None, int or tuple) as torch's ``dim`` for the reductions that need one given."""
    return tuple(range(ndim)) if axis is None else axis


@given(data=st.data(), n=st.integers(1, 3))
def test_cat_and_stack_equal_torch(data, n):
    shape = data.draw(shapes(min_dims=1))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    ax = axis % len(shape)
    sizes = data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    parts = [data.draw(arrays((*shape[:ax], k, *shape[ax + 1 :]))) for k in sizes]
    _both(lambda *ts: mg.cat(ts, axis=axis), lambda *ts: torch.cat(ts, dim=axis), parts)
    new = data.draw(st.integers(-len(shape) - 1, len(shape)))
    same = [data.draw(arrays(shape)) for _ in range(n)]
    _both(lambda *ts: mg.stack(ts, axis=new), lambda *ts: torch.stack(ts, dim=new), same)


@given(data=st.data())
def test_where_equals_torch(data):
    sc, sa, sb = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3)).input_shapes
    cond = data.draw(hnp.arrays(np.bool_, sc))
    theirs = lambda a, b: torch.where(torch.tensor(cond), a, b)  # noqa: E731
    _both(lambda a, b: mg.where(cond, a, b), theirs, [data.draw(arrays(sa)), data.draw(arrays(sb))])


@pytest.mark.parametrize("name", ["maximum", "minimum"])
@given(data=st.data())
def test_maximum_and_minimum_equal_torch_with_ties_and_nan(name, data):
    sa, sb = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3)).input_shapes
    a, b = (np.round(data.draw(arrays(s, st.floats(-1.5, 1.5)))) for s in (sa, sb))  # many ties
    if a.size and data.draw(st.booleans()):
        a.flat[0] = np.nan
    _both(getattr(mg, name), getattr(torch, name), [a, b])


@pytest.mark.parametrize(
    ("ours", "theirs", "values"),
    [
        (lambda t: t.abs(), torch.abs, st.sampled_from([-1.5, -0.0, 0.0, 2.0])),  # 0: gradient 0
        (lambda t: t.sqrt(), torch.sqrt, st.sampled_from([0.0, 0.25, 1.0, 3.0])),  # 0: gradient inf
    ],
)
@given(data=st.data())
def test_abs_and_sqrt_equal_torch_at_zero(ours, theirs, values, data):
    _both(ours, theirs, [data.draw(arrays(shapes(), values))])


@given(data=st.data(), bounds=st.sampled_from([(-0.5, 0.5), (None, 0.5), (-0.5, None), (1.0, -1.0)]))
def test_clip_equals_torch_at_the_bounds(data, bounds):
    x = data.draw(arrays(shapes(), st.sampled_from([-1.0, -0.5, 0.0, 0.5, 1.0, 0.25])))  # on the bounds
    _both(lambda t: t.clip(*bounds), lambda t: torch.clamp(t, *bounds), [x])


@given(data=st.data())
def test_squeeze_unsqueeze_permute_and_flip_equal_torch(data):
    shape = tuple(1 if data.draw(st.booleans()) else s for s in data.draw(shapes()))
    x = data.draw(arrays(shape))
    nd = len(shape)
    axis = data.draw(axes(nd))
    _both(lambda t: t.squeeze(axis), lambda t: t.squeeze() if axis is None else t.squeeze(axis), [x])
    new = data.draw(st.integers(-nd - 1, nd))
    _both(lambda t: t.unsqueeze(new), lambda t: t.unsqueeze(new), [x])
    perm = tuple(data.draw(st.permutations(range(nd))))
    _both(lambda t: t.permute(*perm), lambda t: t.permute(perm), [x])
    _both(lambda t: t.flip(axis), lambda t: t.flip(_dims(axis, nd)), [x])


@given(data=st.data())
def test_expand_equals_torch(data):
    shape = tuple(1 if data.draw(st.booleans()) else s for s in data.draw(shapes(max_side=3)))
    lead = tuple(data.draw(st.lists(st.integers(0, 3), max_size=2)))
    tail = tuple(data.draw(st.sampled_from([-1, 0, 3])) if s == 1 else data.draw(st.sampled_from([-1, s]))
                 for s in shape)
    _both(lambda t: t.expand(*lead, *tail), lambda t: t.expand((*lead, *tail)), [data.draw(arrays(shape))])


@given(data=st.data(), value=st.sampled_from([0.0, -2.5]))
def test_pad_equals_torch_with_negative_widths(data, value):
    shape = data.draw(shapes(min_dims=1))
    widths = []
    for s in reversed(shape[-data.draw(st.integers(1, len(shape))) :]):
        lo = data.draw(st.integers(-s, 3))
        widths += [lo, data.draw(st.integers(-(s + min(lo, 0)), 3))]
    _both(lambda t: F.pad(t, tuple(widths), value=value), lambda t: TF.pad(t, tuple(widths), value=value),
          [data.draw(arrays(shape))])


@given(data=st.data(), keep=st.booleans(), scale=st.sampled_from([1.0, 1e3]))
def test_logsumexp_equals_torch(data, keep, scale):
    shape = data.draw(shapes())
    axis = data.draw(axes(len(shape)))
    x = data.draw(arrays(shape)) * scale  # up to +-2000: exp alone would overflow
    theirs = lambda t: torch.logsumexp(t, dim=_dims(axis, len(shape)), keepdim=keep)  # noqa: E731
    _both(lambda t: t.logsumexp(axis, keepdims=keep), theirs, [x])


@pytest.mark.parametrize("name", ["var", "std"])
@given(data=st.data(), keep=st.booleans(), constant=st.booleans())
def test_var_and_std_equal_torch(name, data, keep, constant):
    shape = data.draw(shapes(min_dims=1))
    axis = data.draw(axes(len(shape)))
    n = int(np.prod([shape[a] for a in np.atleast_1d(_dims(axis, len(shape)))]))
    ddof = data.draw(st.integers(0, min(2, n - 1)))
    # Multiples of 1/8: every mean is exact in both libraries, so a slice of equal values (drawn, or all of
    # them with `constant`) has std exactly 0 in both, and gradient 0 (PyTorch's rule) rather than noise.
    x = data.draw(arrays(shape, st.integers(-16, 16).map(lambda k: k / 8)))
    x = np.full(shape, x.flat[0]) if constant else x
    theirs = lambda t: getattr(torch, name)(t, dim=axis, correction=ddof, keepdim=keep)  # noqa: E731
    _both(lambda t: getattr(t, name)(axis, ddof=ddof, keepdims=keep), theirs, [x])


@given(data=st.data())
def test_min_and_argmax_equal_torch_with_ties(data):
    shape = data.draw(shapes(min_dims=1))
    x = np.round(data.draw(arrays(shape, st.floats(-1.5, 1.5))))  # many ties
    _both(lambda t: t.min(), torch.min, [x])
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    keep = data.draw(st.booleans())
    _both(lambda t: t.min(axis, keepdims=keep), lambda t: torch.min(t, dim=axis, keepdim=keep).values, [x])
    t = torch.tensor(x)
    want = torch.argmax(t, axis, keep).numpy()
    np.testing.assert_array_equal(mg.Tensor(x).argmax(axis, keepdims=keep), want)
    assert mg.Tensor(x).argmax() == torch.argmax(t).item()
