import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import microgradcnn as mg
from microgradcnn import functional as F
from microgradcnn.ops import conv_transpose as ct_module
from microgradcnn.testing import GradcheckError, check_op, gradcheck
from microgradcnn.testing.strategies import conv2d_configs, conv_transpose2d_configs

ATTRS = ("stride", "padding", "output_padding", "groups", "dilation")
CONV_ATTRS = ("stride", "padding", "dilation", "groups")


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def conv_transpose2d_loop(x, w, b=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """The definition, one input pixel at a time: each spreads x * w over its window of the output."""
    (sh, sw), (ph, pw), (eh, ew), (dh, dw) = map(_pair, (stride, padding, output_padding, dilation))
    n, c_in, h, wd = x.shape
    _, cog, kh, kw = w.shape
    oh = (h - 1) * sh - 2 * ph + dh * (kh - 1) + eh + 1
    ow = (wd - 1) * sw - 2 * pw + dw * (kw - 1) + ew + 1
    full = np.zeros((n, cog * groups, oh + 2 * ph, ow + 2 * pw))
    cig = c_in // groups
    for i in range(n):
        for c in range(c_in):
            g = c // cig
            for p in range(h):
                for q in range(wd):
                    for a in range(kh):
                        for e in range(kw):
                            full[i, g * cog : (g + 1) * cog, p * sh + a * dh, q * sw + e * dw] += (
                                x[i, c, p, q] * w[c, :, a, e]
                            )
    out = full[:, :, ph : ph + oh, pw : pw + ow]
    return out if b is None else out + b[None, :, None, None]


def _call(cfg, **over):
    return F.conv_transpose2d(cfg["x"], cfg["weight"], cfg["bias"], **({k: cfg[k] for k in ATTRS} | over))


@given(cfg=conv_transpose2d_configs())
def test_conv_transpose2d_forward_matches_the_loop_definition(cfg):
    out = _call(cfg)
    ref = conv_transpose2d_loop(cfg["x"], cfg["weight"], cfg["bias"], *(cfg[k] for k in ATTRS))
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.data, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("short_row", [0, 1 << 30])  # every width through col2im / batch-innermost adds
@given(cfg=conv_transpose2d_configs())
def test_conv_transpose2d_both_kernel_layouts_match_the_loop_definition(short_row, cfg):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ct_module, "_SHORT_ROW", short_row)
        out = _call(cfg)
    ref = conv_transpose2d_loop(cfg["x"], cfg["weight"], cfg["bias"], *(cfg[k] for k in ATTRS))
    np.testing.assert_allclose(out.data, ref, rtol=1e-10, atol=1e-10)


def test_conv_transpose2d_output_size_formula():
    out = F.conv_transpose2d(np.zeros((2, 3, 5, 4)), np.zeros((3, 2, 3, 2)), stride=(2, 3), padding=(1, 2),
                             output_padding=(1, 0), dilation=(2, 1))
    # (H - 1)s - 2p + d(k - 1) + output_padding + 1 per axis
    assert out.shape == (2, 2, 4 * 2 - 2 + 2 * 2 + 1 + 1, 3 * 3 - 4 + 1 + 0 + 1)


@given(cfg=conv2d_configs(max_side=7), seed=st.integers(0, 2**32 - 1))
def test_conv_transpose2d_is_the_adjoint_of_conv2d(cfg, seed):
    # <conv2d(x, w), y> == <x, conv_transpose2d(y, w)>: why it is conv2d's input gradient
    attrs = {k: cfg[k] for k in CONV_ATTRS}
    x, w = cfg["x"], cfg["weight"]
    out = F.conv2d(x, w, **attrs).data
    y = np.random.default_rng(seed).standard_normal(out.shape)
    (sh, sw), (ph, pw), (dh, dw) = map(_pair, (cfg["stride"], cfg["padding"], cfg["dilation"]))
    kh, kw = w.shape[2:]
    extra = (x.shape[2] + 2 * ph - dh * (kh - 1) - 1 - (out.shape[2] - 1) * sh,
             x.shape[3] + 2 * pw - dw * (kw - 1) - 1 - (out.shape[3] - 1) * sw)
    back = F.conv_transpose2d(y, w, output_padding=extra, **attrs).data
    assert back.shape == x.shape
    np.testing.assert_allclose((out * y).sum(), (x * back).sum(), rtol=1e-9, atol=1e-9)


@given(cfg=conv2d_configs(max_side=7), seed=st.integers(0, 2**32 - 1))
def test_conv2d_weight_equals_conv2d_weight_gradient(cfg, seed):
    attrs = {k: cfg[k] for k in CONV_ATTRS}
    w = mg.Tensor(cfg["weight"], requires_grad=True)
    out = F.conv2d(cfg["x"], w, **attrs)
    g = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(g)
    got = F.conv2d_weight(cfg["x"], w.shape, g, **attrs)
    assert got.shape == w.shape
    np.testing.assert_allclose(got.data, w.grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "attrs",
    [
        {"stride": 2, "padding": 1, "output_padding": 1},
        {"stride": (1, 2), "padding": (0, 1), "output_padding": (1, 0), "dilation": (2, 1), "groups": 2},
        {"stride": 3, "padding": 2, "output_padding": 2, "groups": 4},
    ],
)
def test_conv_transpose2d_gradients_match_central_differences(attrs):
    rng = np.random.default_rng(1)
    x = mg.Tensor(rng.standard_normal((2, 4, 4, 3)), requires_grad=True)
    w = mg.Tensor(rng.standard_normal((4, 8 // attrs.get("groups", 1), 3, 2)), requires_grad=True)
    b = mg.Tensor(rng.standard_normal(8), requires_grad=True)
    assert gradcheck(lambda x, w, b: F.conv_transpose2d(x, w, b, **attrs), [x, w, b])


@pytest.mark.parametrize("name", ["conv_transpose2d", "conv2d_weight"])
def test_check_op_proves_both_ops(name):
    check_op(name, max_examples=25)


def test_gradcheck_catches_conv_transpose2d_input_gradient_without_its_flip(monkeypatch):
    # conv2d of grad with the kernel flipped is the classic transposed-conv bug: same shapes, wrong values
    real = ct_module.ConvTranspose2dFn.backward

    def flipped(ctx, grad):
        x, w = ctx.saved_tensors
        ctx.saved_tensors = (x, np.ascontiguousarray(w[:, :, ::-1, ::-1]))
        return real(ctx, grad)

    monkeypatch.setattr(ct_module.ConvTranspose2dFn, "backward", staticmethod(flipped))
    rng = np.random.default_rng(2)
    x = mg.Tensor(rng.standard_normal((1, 1, 3, 3)), requires_grad=True)
    w = mg.Tensor(rng.standard_normal((1, 1, 2, 2)))
    with pytest.raises(GradcheckError, match="input 0"):
        gradcheck(lambda t: F.conv_transpose2d(t, w, stride=2), [x])


def test_gradcheck_catches_a_wrong_grad_output_gradient_of_conv2d_weight(monkeypatch):
    # a scaled gradient keeps every shape: only the values can show it
    real = ct_module.Conv2dWeightFn.backward

    def halved(ctx, grad):
        dx, dgy = real(ctx, grad)
        return dx, None if dgy is None else dgy * 0.5

    monkeypatch.setattr(ct_module.Conv2dWeightFn, "backward", staticmethod(halved))
    rng = np.random.default_rng(3)
    x = mg.Tensor(rng.standard_normal((1, 1, 5, 5)), requires_grad=True)
    gy = mg.Tensor(rng.standard_normal((1, 1, 2, 2)), requires_grad=True)
    with pytest.raises(GradcheckError, match="input 1"):
        gradcheck(lambda a, b: F.conv2d_weight(a, (1, 1, 2, 2), b, stride=2), [x, gy])


def test_kernel_call_on_arrays_equals_the_recorded_op():
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((2, 2, 3, 3)), rng.standard_normal((2, 3, 2, 2))
    attrs = {"stride": (2, 2), "padding": (1, 0), "output_padding": (1, 1), "dilation": (1, 1), "groups": 1}
    bare = ct_module.ConvTranspose2dFn.call(x, w, **attrs)
    assert isinstance(bare, np.ndarray)
    np.testing.assert_array_equal(bare, F.conv_transpose2d(x, w, **attrs).data)
    gy = rng.standard_normal((2, 3, 2, 2))
    bare = ct_module.Conv2dWeightFn.call(x, gy, weight_size=(3, 2, 2, 2), stride=(1, 1), padding=(0, 0),
                                         dilation=(1, 1), groups=1)
    np.testing.assert_array_equal(bare, F.conv2d_weight(x, (3, 2, 2, 2), gy).data)


def test_conv_transpose2d_computes_only_the_gradients_asked_for():
    rng = np.random.default_rng(5)
    x = mg.Tensor(rng.standard_normal((2, 1, 3, 3)))
    w = mg.Tensor(rng.standard_normal((1, 2, 2, 2)), requires_grad=True)
    b = mg.Tensor(np.zeros(2))
    F.conv_transpose2d(x, w, b).sum().backward()
    assert x.grad is None
    assert b.grad is None
    # d(sum out)/dw[c, o, i, j] = the sum of x[c]: every input pixel meets every kernel element once
    np.testing.assert_allclose(w.grad, np.full((1, 2, 2, 2), x.data.sum()), rtol=1e-12)


def test_conv_transpose2d_keeps_float32_and_bias_adds_per_channel():
    rng = np.random.default_rng(6)
    x = mg.Tensor(rng.standard_normal((2, 3, 4, 4)).astype(np.float32), requires_grad=True)
    w = mg.Tensor(rng.standard_normal((3, 2, 3, 3)).astype(np.float32), requires_grad=True)
    b = mg.Tensor(np.arange(2, dtype=np.float32), requires_grad=True)
    out = F.conv_transpose2d(x, w, b, stride=2)
    out.sum().backward()
    assert out.dtype == x.grad.dtype == w.grad.dtype == b.grad.dtype == np.float32
    per_channel = np.broadcast_to(np.arange(2.0)[None, :, None, None], out.shape)
    np.testing.assert_allclose(out.data - F.conv_transpose2d(x, w, stride=2).data, per_channel, atol=1e-5)
    np.testing.assert_array_equal(b.grad, np.full(2, 2 * 9 * 9, dtype=np.float32))  # N * OH * OW ones


def test_conv_transpose2d_records_its_attrs_for_rendering():
    out = F.conv_transpose2d(mg.Tensor(np.zeros((1, 2, 3, 3)), requires_grad=True), np.zeros((2, 1, 3, 3)),
                             stride=2, padding=(1, 0), output_padding=1, groups=2)
    assert out.op == "conv_transpose2d"
    assert out._ctx.attrs == {"stride": (2, 2), "padding": (1, 0), "output_padding": (1, 1),
                              "dilation": (1, 1), "groups": 2}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"output_padding": 1}, ValueError,
         r"^conv_transpose2d: output_padding \(1, 1\) must be smaller than either stride \(1, 1\) or "
         r"dilation \(1, 1\)"),
        ({"output_padding": (0, 2), "stride": 2}, ValueError, r"output_padding \(0, 2\).*stride \(2, 2\)"),
        ({"output_padding": 2, "stride": 2, "dilation": 2}, ValueError, "output_padding"),
        ({"groups": 3}, ValueError, r"x \(1, 4, 3, 3\) and weight \(4, 2, 3, 3\) disagree with groups=3"),
        ({"groups": 0}, ValueError, "conv_transpose2d: groups must be at least 1"),
        ({"groups": 2.0}, TypeError, "conv_transpose2d: groups must be an int"),
        ({"stride": 0}, ValueError, "conv_transpose2d: stride must be at least 1"),
        ({"output_padding": -1}, ValueError, "conv_transpose2d: output_padding must be at least 0"),
        ({"dilation": 1.5}, TypeError, "conv_transpose2d: dilation must be an int"),
        ({"padding": 3}, ValueError, r"conv_transpose2d: no output left: .*gives \(-1, -1\)"),
        ({"bias": np.zeros(4)}, ValueError, r"bias \(4,\) must be \(C_out,\) = \(2,\)"),
    ],
)
def test_conv_transpose2d_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        F.conv_transpose2d(np.zeros((1, 4, 3, 3)), np.zeros((4, 2, 3, 3)), **kwargs)


def test_conv_transpose2d_allows_output_padding_below_the_dilation_as_pytorch_does():
    out = F.conv_transpose2d(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 2, 2)), output_padding=1, dilation=2)
    assert out.shape == (1, 1, 6, 6)


@pytest.mark.parametrize(("xs", "ws"), [((4, 3, 3), (4, 2, 3, 3)), ((1, 4, 3, 3), (4, 2, 3))])
def test_conv_transpose2d_rejects_wrong_ranks_naming_both_shapes(xs, ws):
    with pytest.raises(ValueError, match=re.escape(f"conv_transpose2d: x {xs} and weight {ws} must be 4-d")):
        F.conv_transpose2d(np.zeros(xs), np.zeros(ws))


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (((1, 2, 5, 5), (3, 2, 3), (1, 3, 3, 3)), {}, TypeError, r"weight_size must be 4 ints"),
        (((1, 2, 5, 5), (3, 2, 3, 0), (1, 3, 3, 3)), {}, ValueError, r"weight_size entry .* at least 1"),
        (((1, 2, 5, 5), (3, 2, 3, 3), (1, 3, 2, 3)), {}, ValueError,
         r"grad_output \(1, 3, 2, 3\) must have conv2d's output size \(3, 3\)"),
        (((1, 2, 5, 5), (3, 2, 3, 3), (2, 3, 3, 3)), {}, ValueError, r"disagree with groups=1"),
        (((1, 4, 5, 5), (3, 2, 3, 3), (1, 3, 3, 3)), {"groups": 2}, ValueError, "divisible by groups"),
        (((1, 2, 5), (3, 2, 3, 3), (1, 3, 3, 3)), {}, ValueError, r"input \(1, 2, 5\) .* must be 4-d"),
        (((1, 2, 5, 5), (3, 2, 3, 3), (1, 3, 3, 3)), {"stride": True}, TypeError, "conv2d_weight: stride"),
    ],
)
def test_conv2d_weight_rejects_bad_arguments(args, kwargs, error, match):
    xs, size, gs = args
    with pytest.raises(error, match=match):
        F.conv2d_weight(np.zeros(xs), size, np.zeros(gs), **kwargs)


# ---- float64 parity with PyTorch (skipped without torch) ---------------------------------------------------

TOL = {"rtol": 1e-7, "atol": 1e-9}


def _torch():
    return pytest.importorskip("torch")


@given(cfg=conv_transpose2d_configs(), seed=st.integers(0, 2**32 - 1))
def test_conv_transpose2d_equals_torch_forward_and_gradients(cfg, seed):
    torch = _torch()
    attrs = {k: cfg[k] for k in ATTRS}
    arrays_in = [cfg["x"], cfg["weight"], cfg["bias"]]
    mine = [None if a is None else mg.Tensor(a, requires_grad=True) for a in arrays_in]
    ref = [None if a is None else torch.tensor(a, requires_grad=True) for a in arrays_in]
    out = F.conv_transpose2d(*mine, **attrs)
    tout = torch.nn.functional.conv_transpose2d(*ref, **attrs)
    assert out.shape == tuple(tout.shape)
    np.testing.assert_allclose(out.data, tout.detach().numpy(), **TOL)
    g = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(g)
    tout.backward(torch.tensor(g))
    for m, r in zip(mine, ref, strict=True):
        if m is not None:
            np.testing.assert_allclose(m.grad, r.grad.numpy(), **TOL)


@given(cfg=conv2d_configs(max_side=7), seed=st.integers(0, 2**32 - 1))
def test_conv2d_weight_equals_torch_and_its_gradients_equal_torch_double_backward(cfg, seed):
    torch = _torch()
    attrs = {k: cfg[k] for k in CONV_ATTRS}
    size = cfg["weight"].shape
    gy_shape = F.conv2d(cfg["x"], cfg["weight"], **attrs).shape
    rng = np.random.default_rng(seed)
    gy, up = rng.standard_normal(gy_shape), rng.standard_normal(size)
    x, g = mg.Tensor(cfg["x"], requires_grad=True), mg.Tensor(gy, requires_grad=True)
    out = F.conv2d_weight(x, size, g, **attrs)
    out.backward(up)
    tx, tg = torch.tensor(cfg["x"], requires_grad=True), torch.tensor(gy, requires_grad=True)
    # torch's reference: the weight gradient of conv2d, itself differentiated (double backward)
    tw = torch.tensor(cfg["weight"], requires_grad=True)
    (tout,) = torch.autograd.grad(torch.nn.functional.conv2d(tx, tw, **attrs), tw, tg, create_graph=True)
    tout.backward(torch.tensor(up))
    np.testing.assert_allclose(out.data, tout.detach().numpy(), **TOL)
    np.testing.assert_allclose(x.grad, tx.grad.numpy(), **TOL)
    np.testing.assert_allclose(g.grad, tg.grad.numpy(), **TOL)


# ---- second order: the backward rules are made of ops --------------------------------------------------
# Until the engine records backward passes itself (mg.grad(..., create_graph=True)), this does for one op
# what the contract says the engine will do: run the op's backward with the output gradient as a Tensor and
# every saved input array replaced by (identity) its Tensor. The gradients it returns are then recorded
# graphs, whose own backward (first order, already proven) gives the second derivatives.


def _recorded_backward(out, grad):
    ctx = out._ctx
    by_id = {id(t.data): t for t in ctx.parents}
    ctx.saved_tensors = tuple(by_id.get(id(a), a) for a in ctx.saved_tensors)
    return ctx.fn.backward(ctx, grad)


def _double_backward_parity(ours, theirs, arrays_in, seed):
    """d/d(inputs, grad) of <vjp(grad), v>, ours through the recorded backward, torch's by create_graph."""
    torch = _torch()
    rng = np.random.default_rng(seed)
    mine = [mg.Tensor(a, requires_grad=True) for a in arrays_in]
    ref = [torch.tensor(a, requires_grad=True) for a in arrays_in]
    out = ours(*mine)
    gy = rng.standard_normal(out.shape)
    g, tg = mg.Tensor(gy, requires_grad=True), torch.tensor(gy, requires_grad=True)
    firsts = _recorded_backward(out, g)
    tfirsts = torch.autograd.grad(theirs(*ref), ref, tg, create_graph=True)
    vs = [rng.standard_normal(t.shape) for t in tfirsts]
    total = None
    for first, v in zip(firsts, vs, strict=True):
        term = (first * v).sum()
        total = term if total is None else total + term
    total.backward()
    sum((t * torch.tensor(v)).sum() for t, v in zip(tfirsts, vs, strict=True)).backward()
    for first, tfirst in zip(firsts, tfirsts, strict=True):
        np.testing.assert_allclose(first.data, tfirst.detach().numpy(), **TOL)
    for m, r in zip([*mine, g], [*ref, tg], strict=True):
        if r.grad is None:  # e.g. the bias: no second derivative reaches it
            assert m.grad is None or not np.any(m.grad)
        else:
            np.testing.assert_allclose(m.grad, r.grad.numpy(), **TOL)


@settings(max_examples=30, deadline=None)
@given(cfg=conv_transpose2d_configs(), seed=st.integers(0, 2**32 - 1))
def test_conv_transpose2d_backward_recorded_as_ops_equals_torch_double_backward(cfg, seed):
    torch = _torch()
    attrs = {k: cfg[k] for k in ATTRS}
    arrays_in = [a for a in (cfg["x"], cfg["weight"], cfg["bias"]) if a is not None]
    _double_backward_parity(lambda *ts: F.conv_transpose2d(*ts, **attrs),
                            lambda *ts: torch.nn.functional.conv_transpose2d(*ts, **attrs), arrays_in, seed)


@settings(max_examples=30, deadline=None)
@given(cfg=conv2d_configs(max_side=7), seed=st.integers(0, 2**32 - 1))
def test_conv2d_weight_backward_recorded_as_ops_equals_torch_double_backward(cfg, seed):
    torch = _torch()
    attrs = {k: cfg[k] for k in CONV_ATTRS}
    size = cfg["weight"].shape
    gy = np.random.default_rng(seed + 1).standard_normal(F.conv2d(cfg["x"], cfg["weight"], **attrs).shape)

    def theirs(x, g):
        w = torch.zeros(size, dtype=torch.float64, requires_grad=True)
        return torch.autograd.grad(torch.nn.functional.conv2d(x, w, **attrs), w, g, create_graph=True)[0]

    _double_backward_parity(lambda x, g: F.conv2d_weight(x, size, g, **attrs), theirs, [cfg["x"], gy], seed)
