"""Second derivatives equal PyTorch's double backward (float64, 1e-5) for every op, where torch is installed.

Each case computes the vector-Jacobian product ``grad(f(x), x, v, create_graph=True)`` in both frameworks,
then differentiates a fixed random projection of it with respect to every input and to ``v``: the
Hessian-vector products and the Jacobian again, exactly what a gradient penalty or an HVP uses.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import microgradcnn as mg
from microgradcnn import functional as F
from microgradcnn.testing.strategies import (
    arrays,
    away_from_zero,
    axes,
    class_targets,
    conv2d_configs,
    distinct_arrays,
    floats,
    pool2d_args,
    pool2d_configs,
    shapes,
)

torch = pytest.importorskip("torch")
TF = torch.nn.functional
TOL = {"rtol": 1e-5, "atol": 1e-5}


def _double(ours, theirs, arrays_in, seed=0):
    """Compare f, its VJP with a random v, and the gradients of a random projection of that VJP with respect
    to the inputs and v, between ``ours`` (on Tensors) and ``theirs`` (on torch tensors); None stays None."""
    arrays_in = [None if a is None else np.asarray(a, np.float64) for a in arrays_in]
    mine = [None if a is None else mg.Tensor(a, requires_grad=True) for a in arrays_in]
    ref = [None if a is None else torch.tensor(a, requires_grad=True) for a in arrays_in]
    out, tout = ours(*mine), theirs(*ref)
    np.testing.assert_allclose(out.data, tout.detach().numpy(), **TOL)
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(out.shape)
    mv, tv = mg.Tensor(v, requires_grad=True), torch.tensor(v, requires_grad=True)
    m_in = [m for m in mine if m is not None]
    t_in = [t for t in ref if t is not None]
    g = mg.grad(out, m_in, mv, create_graph=True, allow_unused=True)
    tg = torch.autograd.grad(tout, t_in, tv, create_graph=True, allow_unused=True)
    projections = [rng.standard_normal(m.shape) for m in m_in]
    total, ttotal = mg.Tensor(np.zeros(())), torch.zeros((), dtype=torch.float64)
    for a, b, r in zip(g, tg, projections, strict=True):
        np.testing.assert_allclose(0 if a is None else a.data, 0 if b is None else b.detach().numpy(), **TOL)
        if a is not None and a.requires_grad:
            total = total + (a * r).sum()
        if b is not None and b.requires_grad:
            ttotal = ttotal + (b * torch.tensor(r)).sum()
    if not total.requires_grad and not ttotal.requires_grad:
        return  # the op is linear in its inputs and in v: no second derivative anywhere
    none = [None] * (len(m_in) + 1)
    second = mg.grad(total, [*m_in, mv], allow_unused=True) if total.requires_grad else none
    tsecond = torch.autograd.grad(ttotal, [*t_in, tv], allow_unused=True) if ttotal.requires_grad else none
    for a, b in zip(second, tsecond, strict=True):
        np.testing.assert_allclose(0 if a is None else a.data, 0 if b is None else b.numpy(), **TOL)


def _binary(shape_pair, low=-2.0, high=2.0):
    return st.tuples(arrays(shape_pair[0], floats(low, high)), arrays(shape_pair[1], floats(low, high)))


BINARY = {
    "add": (lambda a, b: a + b, lambda a, b: a + b),
    "sub": (lambda a, b: a - b, lambda a, b: a - b),
    "mul": (lambda a, b: a * b, lambda a, b: a * b),
    "div": (lambda a, b: a / (b * b + 0.5), lambda a, b: a / (b * b + 0.5)),
}


@pytest.mark.parametrize("name", sorted(BINARY))
@given(data=st.data())
@settings(max_examples=20)
def test_binary_ops_double_backward_equals_torch(name, data):
    from microgradcnn.testing.strategies import broadcastable_shapes

    sa, sb = data.draw(broadcastable_shapes())
    a, b = data.draw(_binary((sa, sb)))
    _double(*BINARY[name], [a, b])


UNARY = {
    "neg": (lambda x: -x, lambda x: -x, (-2, 2)),
    "pow": (lambda x: x**2.5, lambda x: x**2.5, (0.5, 2)),
    "pow_negative": (lambda x: x**-2.0, lambda x: x**-2.0, (0.5, 2)),
    "rpow": (lambda x: 3.0**x, lambda x: 3.0**x, (-2, 2)),
    "exp": (lambda x: x.exp(), lambda x: x.exp(), (-2, 2)),
    "log": (lambda x: x.log(), lambda x: x.log(), (0.5, 3)),
    "relu": (lambda x: F.relu(x) * x, lambda x: TF.relu(x) * x, (-2, 2)),
    "tanh": (lambda x: x.tanh(), lambda x: x.tanh(), (-2, 2)),
    "sigmoid": (lambda x: x.sigmoid(), lambda x: x.sigmoid(), (-5, 5)),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@given(data=st.data())
@settings(max_examples=15)
def test_elementwise_ops_double_backward_equals_torch(name, data):
    ours, theirs, (low, high) = UNARY[name]
    x = data.draw(arrays(shapes(), floats(low, high)))
    if name == "relu":  # away from the kink, where finite steps and torch agree on the one-sided value
        x = np.where(np.abs(x) < 0.05, 0.5, x)
    _double(ours, theirs, [x])


@pytest.mark.parametrize("name", ["sum", "mean", "max"])
@given(data=st.data())
@settings(max_examples=20)
def test_reductions_double_backward_equals_torch(name, data):
    shape = data.draw(shapes())
    axis = data.draw(axes(len(shape)))
    keepdims = data.draw(st.booleans())
    x = data.draw(distinct_arrays(shape)) if name == "max" else data.draw(arrays(shape))
    dims = tuple(range(len(shape))) if axis is None else axis
    ours = lambda t: getattr(t, name)(axis=axis, keepdims=keepdims) ** 2  # noqa: E731
    if name == "max":
        theirs = lambda t: torch.amax(t, dim=dims, keepdim=keepdims) ** 2  # noqa: E731
    else:
        theirs = lambda t: getattr(torch, name)(t, dim=dims, keepdim=keepdims) ** 2  # noqa: E731
    _double(ours, theirs, [x])


@given(data=st.data())
@settings(max_examples=15)
def test_max_along_an_axis_with_ties_double_backward_equals_torch(data):
    shape = data.draw(shapes(min_dims=1))
    axis = data.draw(st.integers(0, len(shape) - 1))
    x = np.round(data.draw(arrays(shape)))  # integers in [-2, 2]: ties everywhere
    _double(lambda t: t.max(axis=axis) * 3.0, lambda t: torch.max(t, dim=axis).values * 3.0, [x])


@given(data=st.data())
@settings(max_examples=20)
def test_shape_ops_double_backward_equals_torch(data):
    shape = data.draw(shapes(min_dims=1))
    x = data.draw(arrays(shape))
    perm = tuple(data.draw(st.permutations(range(len(shape)))))
    index = data.draw(st.lists(st.integers(0, shape[0] - 1), min_size=1, max_size=4))
    _double(lambda t: (t.transpose(perm).reshape(-1) ** 2).reshape(x.T.shape),
            lambda t: (t.permute(perm).reshape(-1) ** 2).reshape(x.T.shape), [x])
    _double(lambda t: t[np.asarray(index)] ** 3, lambda t: t[torch.tensor(index)] ** 3, [x])
    _double(lambda t: F.broadcast_to(t, (2, *shape)) ** 2, lambda t: torch.broadcast_to(t, (2, *shape)) ** 2,
            [x])
    rows = np.asarray(index)
    values = data.draw(arrays((len(index), *shape[1:])))

    def theirs_scatter(v):
        zeros = torch.zeros(shape, dtype=torch.float64)
        return zeros.index_put((torch.tensor(rows),), v, accumulate=True) ** 2

    _double(lambda v: F.scatter(v, shape, rows) ** 2, theirs_scatter, [values])


@given(data=st.data())
@settings(max_examples=20)
def test_matmul_and_linear_double_backward_equal_torch(data):
    n, k, m, b = (data.draw(st.integers(1, 3)) for _ in range(4))
    pairs = [((n, k), (k, m)), ((b, n, k), (1, k, m)), ((k,), (b, k, m)), ((k,), (k,))]
    kind = data.draw(st.sampled_from(pairs))
    x, y = data.draw(arrays(kind[0])), data.draw(arrays(kind[1]))
    _double(lambda p, q: (p @ q).tanh(), lambda p, q: (p @ q).tanh(), [x, y])
    w, bias = data.draw(arrays((m, k))), data.draw(st.none() | arrays((m,)))
    xs = data.draw(arrays((b, n, k)))
    _double(lambda p, q, c: F.linear(p, q, c).sigmoid(), lambda p, q, c: TF.linear(p, q, c).sigmoid(),
            [xs, w, bias])


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@given(data=st.data())
@settings(max_examples=20)
def test_softmaxes_double_backward_equal_torch(name, data):
    shape = data.draw(shapes(min_dims=1))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = data.draw(arrays(shape, floats(-5, 5)))
    _double(lambda t: getattr(F, name)(t, axis=axis), lambda t: getattr(TF, name)(t, dim=axis), [x])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@given(data=st.data(), eps=st.sampled_from([0.0, 0.1, 1.0]))
@settings(max_examples=15)
def test_cross_entropy_double_backward_equals_torch(reduction, data, eps):
    n, c = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 5))
    logits = data.draw(arrays((n, c), floats(-5, 5)))
    target = data.draw(class_targets(n, c))
    kw = {"reduction": reduction, "label_smoothing": eps}
    theirs = lambda t: TF.cross_entropy(t, torch.tensor(target), **kw)  # noqa: E731
    _double(lambda t: F.cross_entropy(t, target, **kw), theirs, [logits])


@given(cfg=conv2d_configs(max_n=2, max_channels=4, max_side=6, max_kernel=3))
@settings(max_examples=25)
def test_conv2d_double_backward_equals_torch(cfg):
    attrs = {k: cfg[k] for k in ("stride", "padding", "dilation", "groups")}
    _double(lambda x, w, b: F.conv2d(x, w, b, **attrs).tanh(),
            lambda x, w, b: TF.conv2d(x, w, b, **attrs).tanh(), [cfg["x"], cfg["weight"], cfg["bias"]])


@pytest.mark.parametrize("name", ["max_pool2d", "avg_pool2d"])
@given(cfg=pool2d_configs(distinct=False, max_side=7), ties=st.booleans())
@settings(max_examples=25)
def test_pools_double_backward_equal_torch_with_ties_and_padding(name, cfg, ties):
    # every argument drawn: dilation, ceil_mode windows hanging past the padding, count_include_pad
    x = np.round(cfg["x"]) if ties else cfg["x"]  # rounded values in [-2, 2]: windows full of ties
    args = pool2d_args(name, cfg)
    _double(lambda t: getattr(F, name)(t, **args) ** 2, lambda t: getattr(TF, name)(t, **args) ** 2, [x])


def test_a_gradient_penalty_step_on_a_conv_layer_equals_torch():
    # WGAN-GP's penalty: (||d critic(x) / d x|| - 1)^2, whose gradient with respect to the critic's weights
    # goes through the conv's input gradient (a conv_transpose2d) and is a second derivative
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 2, 8, 8))
    w, b = rng.standard_normal((3, 2, 3, 3)) * 0.5, rng.standard_normal(3) * 0.1
    lin = rng.standard_normal((1, 3 * 3 * 3)) * 0.3

    def penalty_grads(lib, tensor, conv, linear, grad):
        xs, ws, bs = (tensor(a, True) for a in (x, w, b))
        critic = linear(conv(xs, ws, bs, stride=2).tanh().reshape(4, -1), tensor(lin, False)).sum()
        (gx,) = grad(critic, [xs])
        norms = ((gx * gx).reshape(4, -1).sum(1) + 1e-12) ** 0.5
        penalty = ((norms - 1.0) ** 2).mean()
        return [a.data if lib == "mg" else a.detach().numpy() for a in grad(penalty, [ws, bs])]

    mine = penalty_grads("mg", lambda a, r: mg.Tensor(a, requires_grad=r), F.conv2d, F.linear,
                         lambda y, xs: mg.grad(y, xs, create_graph=True))
    theirs = penalty_grads("torch", lambda a, r: torch.tensor(a, requires_grad=r), TF.conv2d, TF.linear,
                           lambda y, xs: torch.autograd.grad(y, xs, create_graph=True))
    for a, b in zip(mine, theirs, strict=True):
        np.testing.assert_allclose(a, b, **TOL)
    assert np.abs(mine[0]).max() > 1e-3  # the penalty does reach the weights


ACTIVATIONS = {
    "erf": (F.erf, torch.erf),
    "gelu": (F.gelu, TF.gelu),
    "gelu_tanh": (lambda t: F.gelu(t, "tanh"), lambda t: TF.gelu(t, approximate="tanh")),
    "leaky_relu": (lambda t: F.leaky_relu(t, 0.2) ** 2, lambda t: TF.leaky_relu(t, 0.2) ** 2),
    "elu": (lambda t: F.elu(t, 0.7), lambda t: TF.elu(t, 0.7)),
    # threshold 3.05: the switch to the linear branch (x = 1.525) is a kink, kept off the values drawn
    "softplus": (lambda t: F.softplus(t, 2.0, 3.05), lambda t: TF.softplus(t, 2.0, 3.05)),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@given(data=st.data())
@settings(max_examples=15)
def test_activations_double_backward_equal_torch(name, data):
    # leaky_relu is piecewise linear: squared, so that its second derivative is not zero everywhere. At
    # x = 0 exactly, leaky_relu and elu have a kink whose one-sided second derivative is a convention.
    ours, theirs = ACTIVATIONS[name]
    values = away_from_zero(0.01, 4.0) if name in ("leaky_relu", "elu") else floats(-4.0, 4.0)
    _double(ours, theirs, [data.draw(arrays(shapes(), values))])


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@given(data=st.data())
@settings(max_examples=15)
def test_batch_norm_double_backward_equals_torch(training, affine, data):
    n, c = data.draw(st.integers(2, 4)), data.draw(st.integers(1, 3))
    spatial = tuple(data.draw(st.lists(st.integers(1, 3), max_size=2)))
    x = data.draw(distinct_arrays((n, c, *spatial), spacing=0.3))
    rm, rv = np.linspace(-1, 1, c), np.linspace(0.5, 2, c)
    params = [data.draw(arrays((c,), floats(0.5, 2.0))), data.draw(arrays((c,)))] if affine else []

    def ours(t, *wb):
        return F.batch_norm(t, rm.copy(), rv.copy(), *wb, training=training, eps=0.01) ** 2

    def theirs(t, *wb):
        stats = torch.tensor(rm), torch.tensor(rv)
        return TF.batch_norm(t, *stats, *wb, training=training, eps=0.01) ** 2

    _double(ours, theirs, [x, *params])


def test_dropout_double_backward_equals_torch_with_the_same_mask():
    x = np.random.default_rng(0).standard_normal((5, 6))
    mask = (np.random.default_rng(4).random(x.shape) >= 0.3) / 0.7
    _double(lambda t: F.dropout(t, 0.3, rng=np.random.default_rng(4)) ** 3,
            lambda t: (t * torch.tensor(mask)) ** 3, [x])


# ---- the tensor ops: cat stack where maximum minimum abs sqrt clip, shape ops, logsumexp var std min
@given(data=st.data())
@settings(max_examples=20)
def test_joins_and_where_double_backward_equal_torch(data):
    shape = data.draw(shapes(min_dims=1))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    ax = axis % len(shape)
    a = data.draw(arrays(shape))
    b = data.draw(arrays((*shape[:ax], data.draw(st.integers(1, 3)), *shape[ax + 1 :])))
    _double(lambda p, q: mg.cat([p, q * p.sum()], axis=axis) ** 2,
            lambda p, q: torch.cat([p, q * p.sum()], dim=axis) ** 2, [a, b])
    new = data.draw(st.integers(-len(shape) - 1, len(shape)))
    c = data.draw(arrays(shape))
    _double(lambda p, q: mg.stack([p, p * q], axis=new) ** 2,
            lambda p, q: torch.stack([p, p * q], dim=new) ** 2, [a, c])
    cond = data.draw(arrays(shape, st.booleans(), dtype=np.bool_))
    _double(lambda p, q: mg.where(cond, p * q, q) ** 2,
            lambda p, q: torch.where(torch.tensor(cond), p * q, q) ** 2, [a, c])


@pytest.mark.parametrize("name", ["maximum", "minimum"])
@given(data=st.data())
@settings(max_examples=20)
def test_maximum_and_minimum_double_backward_equal_torch_with_ties(name, data):
    shape = data.draw(shapes())
    a, b = (np.round(data.draw(arrays(shape, floats(-1.5, 1.5)))) for _ in range(2))  # many ties
    _double(lambda p, q: getattr(mg, name)(p * q, q) ** 2, lambda p, q: getattr(torch, name)(p * q, q) ** 2,
            [a, b])


@given(data=st.data(), bounds=st.sampled_from([(-0.5, 0.5), (None, 0.5), (-0.5, None)]))
@settings(max_examples=20)
def test_abs_sqrt_and_clip_double_backward_equal_torch(data, bounds):
    shape = data.draw(shapes())
    x = data.draw(arrays(shape, st.sampled_from([-1.0, -0.5, 0.0, 0.5, 1.5, 0.25])))  # kinks and bounds
    _double(lambda t: t.abs() * t, lambda t: t.abs() * t, [x])
    _double(lambda t: t.clip(*bounds) ** 3, lambda t: torch.clamp(t, *bounds) ** 3, [x])
    _double(lambda t: t.sqrt(), torch.sqrt, [data.draw(arrays(shape, floats(0.5, 3.0)))])


@given(data=st.data(), value=st.sampled_from([0.0, 1.5]))
@settings(max_examples=20)
def test_new_shape_ops_double_backward_equal_torch(data, value):
    shape = tuple(1 if data.draw(st.booleans()) else s for s in data.draw(shapes(min_dims=1, max_side=3)))
    x = data.draw(arrays(shape))
    nd = len(shape)
    axis = data.draw(axes(nd))
    dims = tuple(range(nd)) if axis is None else axis
    _double(lambda t: t.squeeze(axis) ** 2, lambda t: (t.squeeze() if axis is None else t.squeeze(axis)) ** 2,
            [x])
    new = data.draw(st.integers(-nd - 1, nd))
    _double(lambda t: t.unsqueeze(new) ** 2, lambda t: t.unsqueeze(new) ** 2, [x])
    perm = tuple(data.draw(st.permutations(range(nd))))
    _double(lambda t: t.permute(*perm) ** 2, lambda t: t.permute(perm) ** 2, [x])
    _double(lambda t: t.flip(axis) ** 2, lambda t: t.flip(dims) ** 2, [x])
    size = tuple(3 if s == 1 else -1 for s in shape)
    _double(lambda t: t.expand(2, *size) ** 2, lambda t: t.expand((2, *size)) ** 2, [x])
    widths = (data.draw(st.integers(-min(1, shape[-1]), 2)), 1)
    _double(lambda t: F.pad(t, widths, value=value) ** 2, lambda t: TF.pad(t, widths, value=value) ** 2, [x])


@given(data=st.data(), keepdims=st.booleans())
@settings(max_examples=20)
def test_new_reductions_double_backward_equal_torch(data, keepdims):
    shape = data.draw(shapes(min_dims=1))
    axis = data.draw(axes(len(shape)))
    dims = tuple(range(len(shape))) if axis is None else axis
    x = data.draw(arrays(shape))
    _double(lambda t: t.logsumexp(axis, keepdims=keepdims),
            lambda t: torch.logsumexp(t, dim=dims, keepdim=keepdims), [x])
    n = int(np.prod([shape[a] for a in np.atleast_1d(dims)]))
    ddof = data.draw(st.integers(0, min(2, n - 1)))
    _double(lambda t: t.var(axis, ddof=ddof, keepdims=keepdims),
            lambda t: torch.var(t, dim=axis, correction=ddof, keepdim=keepdims), [x])
    spaced = data.draw(distinct_arrays(shape))  # no constant slice (std's kink at 0) unless n = 1
    if n > 1:
        _double(lambda t: t.std(axis, ddof=ddof, keepdims=keepdims),
                lambda t: torch.std(t, dim=axis, correction=ddof, keepdim=keepdims), [spaced])
    _double(lambda t: t.min(axis, keepdims=keepdims) ** 2,
            lambda t: torch.amin(t, dim=dims, keepdim=keepdims) ** 2, [spaced])


@pytest.mark.parametrize("output_size", [1, 2, (3, None), (2, 4), (5, 3)])
def test_adaptive_avg_pool2d_double_backward_equals_torch(output_size):
    x = np.random.default_rng(7).standard_normal((2, 3, 5, 4))  # 5 and 4 rows/cols: windows overlap or grow
    _double(lambda t: F.adaptive_avg_pool2d(t, output_size) ** 2,
            lambda t: TF.adaptive_avg_pool2d(t, output_size) ** 2, [x])
