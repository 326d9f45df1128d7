import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import microgradcnn as mg
from microgradcnn import functional as F
from microgradcnn.ops import conv as conv_module
from microgradcnn.ops import window as window_module
from microgradcnn.testing import GradcheckError, gradcheck
from microgradcnn.testing.strategies import conv2d_configs


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def conv2d_loop(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """The definition, one output element at a time: the obviously-correct slow reference."""
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    n, c, h, wd = x.shape
    oc, cg, kh, kw = w.shape
    xp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    xp[:, :, ph : ph + h, pw : pw + wd] = x
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, oc, oh, ow))
    per_group = oc // groups
    for i in range(n):
        for o in range(oc):
            g = o // per_group
            for p in range(oh):
                for q in range(ow):
                    total = 0.0 if b is None else b[o]
                    for ci in range(cg):
                        for a in range(kh):
                            for e in range(kw):
                                total += w[o, ci, a, e] * xp[i, g * cg + ci, p * sh + a * dh, q * sw + e * dw]
                    out[i, o, p, q] = total
    return out


def _call(cfg, **over):
    args = {k: cfg[k] for k in ("stride", "padding", "dilation", "groups")} | over
    return F.conv2d(cfg["x"], cfg["weight"], cfg["bias"], **args)


@given(cfg=conv2d_configs(max_side=7))
def test_conv2d_forward_matches_the_loop_definition(cfg):
    out = _call(cfg)
    ref = conv2d_loop(cfg["x"], cfg["weight"], cfg["bias"], cfg["stride"], cfg["padding"], cfg["dilation"],
                      cfg["groups"])
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.data, ref, rtol=1e-10, atol=1e-10)


def test_conv2d_output_size_formula():
    x = np.zeros((2, 3, 11, 8))
    w = np.zeros((5, 3, 3, 2))
    out = F.conv2d(x, w, stride=(2, 3), padding=(1, 2), dilation=(2, 1))
    # (H + 2p - d(k-1) - 1)//s + 1 per axis
    assert out.shape == (2, 5, (11 + 2 - 4 - 1) // 2 + 1, (8 + 4 - 1 - 1) // 3 + 1)


def test_depthwise_conv2d_is_one_conv_per_channel():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 6))
    w = rng.standard_normal((6, 1, 3, 3))  # groups = C: two filters per input channel
    out = F.conv2d(x, w, groups=3, padding=1).data
    for ch in range(3):
        alone = F.conv2d(x[:, ch : ch + 1], w[2 * ch : 2 * ch + 2], padding=1).data
        np.testing.assert_allclose(out[:, 2 * ch : 2 * ch + 2], alone, rtol=1e-12)


@pytest.mark.parametrize(
    "attrs",
    [
        {"stride": 2, "padding": 1, "dilation": 1, "groups": 1},
        {"stride": (1, 2), "padding": (2, 0), "dilation": (2, 1), "groups": 2},
        {"stride": 3, "padding": 0, "dilation": 2, "groups": 4},
    ],
)
def test_conv2d_gradients_match_central_differences(attrs):
    rng = np.random.default_rng(1)
    x = mg.Tensor(rng.standard_normal((2, 4, 7, 6)), requires_grad=True)
    w = mg.Tensor(rng.standard_normal((4, 4 // attrs["groups"], 3, 2)), requires_grad=True)
    b = mg.Tensor(rng.standard_normal(4), requires_grad=True)
    assert gradcheck(lambda x, w, b: F.conv2d(x, w, b, **attrs), [x, w, b])


def test_gradcheck_catches_a_flipped_kernel_in_the_input_gradient(monkeypatch):
    # The classic conv bug: correlate in forward but forget (or double) the flip in backward. Flipping the
    # kernel that dx is computed with keeps every shape and must still fail the check.
    real = conv_module.Conv2dFn.backward

    def flipped(ctx, grad):
        x_shape, w, *rest = ctx.saved_tensors
        ctx.saved_tensors = (x_shape, np.ascontiguousarray(w[:, :, ::-1, ::-1]), *rest)
        return real(ctx, grad)

    monkeypatch.setattr(conv_module.Conv2dFn, "backward", staticmethod(flipped))
    rng = np.random.default_rng(2)
    x = mg.Tensor(rng.standard_normal((1, 1, 4, 4)), requires_grad=True)
    w = mg.Tensor(rng.standard_normal((1, 1, 2, 2)))
    with pytest.raises(GradcheckError, match="input 0"):
        gradcheck(F.conv2d, [x, w])


def test_conv2d_frozen_weight_keeps_no_patches_but_still_gives_input_gradient():
    rng = np.random.default_rng(3)
    x = mg.Tensor(rng.standard_normal((2, 2, 5, 5)), requires_grad=True)
    w = mg.Tensor(rng.standard_normal((3, 2, 3, 3)))
    out = F.conv2d(x, w, padding=1)
    assert out._ctx.saved_tensors[2] is None  # the im2col patches: needed only for dW
    assert gradcheck(lambda t: F.conv2d(t, w, padding=1), [x])


def test_conv2d_skips_gradients_nobody_asked_for():
    rng = np.random.default_rng(4)
    x = mg.Tensor(rng.standard_normal((2, 1, 5, 5)))  # input images: no grad
    w = mg.Tensor(rng.standard_normal((3, 1, 3, 3)), requires_grad=True)
    b = mg.Tensor(np.zeros(3))  # frozen bias
    F.conv2d(x, w, b).sum().backward()
    assert x.grad is None
    assert b.grad is None
    # d(sum out)/dw[o, 0, i, j] = sum over images and outputs of the input under offset (i, j)
    want = np.stack([[x.data[:, 0, i : i + 3, j : j + 3].sum() for j in range(3)] for i in range(3)])
    np.testing.assert_allclose(w.grad, np.broadcast_to(want, (3, 1, 3, 3)), rtol=1e-12)


def test_conv2d_keeps_float32_and_bias_adds_per_channel():
    rng = np.random.default_rng(6)
    x = mg.Tensor(rng.standard_normal((2, 3, 6, 6)).astype(np.float32), requires_grad=True)
    w = mg.Tensor(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), requires_grad=True)
    b = mg.Tensor(np.arange(4, dtype=np.float32), requires_grad=True)
    out = F.conv2d(x, w, b)
    out.sum().backward()
    assert out.dtype == x.grad.dtype == w.grad.dtype == b.grad.dtype == np.float32
    no_bias = F.conv2d(x, w).data
    per_channel = np.broadcast_to(np.arange(4.0)[None, :, None, None], out.shape)
    np.testing.assert_allclose(out.data - no_bias, per_channel, atol=1e-5)
    np.testing.assert_array_equal(b.grad, np.full(4, 2 * 4 * 4, dtype=np.float32))  # N * OH * OW ones


def test_conv2d_backward_twice_with_retain_graph():
    rng = np.random.default_rng(7)
    x = mg.Tensor(rng.standard_normal((1, 2, 4, 4)), requires_grad=True)
    w = mg.Tensor(rng.standard_normal((2, 2, 2, 2)), requires_grad=True)
    out = F.conv2d(x, w, padding=1).sum()
    out.backward(retain_graph=True)
    first = x.grad.copy(), w.grad.copy()
    out.backward()
    np.testing.assert_allclose(x.grad, 2 * first[0])
    np.testing.assert_allclose(w.grad, 2 * first[1])


def test_conv2d_records_its_attrs_for_rendering():
    out = F.conv2d(mg.Tensor(np.zeros((1, 2, 5, 5)), requires_grad=True), np.zeros((2, 1, 3, 3)), stride=2,
                   padding=(1, 0), groups=2)
    assert out.op == "conv2d"
    assert out._ctx.attrs == {"stride": (2, 2), "padding": (1, 0), "dilation": (1, 1), "groups": 2}


def test_conv2d_channel_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3, 5, 5\).*\(4, 2, 3, 3\)"):
        F.conv2d(np.zeros((2, 3, 5, 5)), np.zeros((4, 2, 3, 3)))


def test_conv2d_groups_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(1, 4, 5, 5\).*\(3, 2, 3, 3\).*groups=2"):
        F.conv2d(np.zeros((1, 4, 5, 5)), np.zeros((3, 2, 3, 3)), groups=2)  # OC 3 is not divisible by 2
    with pytest.raises(ValueError, match=r"\(1, 4, 5, 5\).*\(4, 4, 3, 3\)"):
        F.conv2d(np.zeros((1, 4, 5, 5)), np.zeros((4, 4, 3, 3)), groups=2)  # weight must see C/groups


@given(
    k=st.integers(2, 5), d=st.integers(1, 3), p=st.integers(0, 2), data=st.data(),
)
def test_conv2d_without_room_for_one_output_raises(k, d, p, data):
    need = d * (k - 1) + 1  # the dilated kernel's extent
    if need - 2 * p <= 1:
        return
    h = data.draw(st.integers(1, need - 2 * p - 1))
    with pytest.raises(ValueError, match="no output fits"):
        F.conv2d(np.zeros((1, 1, h, 9)), np.zeros((1, 1, k, 1)), padding=(p, 0), dilation=d)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"stride": 0}, ValueError, "stride must be at least 1"),
        ({"padding": -1}, ValueError, "padding must be at least 0"),
        ({"dilation": (1, 0)}, ValueError, "dilation"),
        ({"stride": 1.5}, TypeError, "stride must be an int"),
        ({"padding": (1, 2, 3)}, TypeError, "padding"),
        ({"stride": True}, TypeError, "stride"),
        ({"groups": 0}, ValueError, "groups"),
        ({"groups": 1.0}, TypeError, "groups"),
        ({"bias": np.zeros(3)}, ValueError, r"bias \(3,\)"),
    ],
)
def test_conv2d_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        F.conv2d(np.zeros((1, 2, 5, 5)), np.zeros((4, 2, 3, 3)), **kwargs)


def test_conv2d_rejects_non_4d_inputs_naming_shapes():
    with pytest.raises(ValueError, match=r"\(2, 5, 5\).*\(4, 2, 3, 3\)"):
        F.conv2d(np.zeros((2, 5, 5)), np.zeros((4, 2, 3, 3)))


def test_conv2d_empty_batch_gives_empty_output_and_zero_weight_gradient():
    w = mg.Tensor(np.ones((3, 2, 2, 2)), requires_grad=True)
    out = F.conv2d(np.zeros((0, 2, 4, 4)), w)
    assert out.shape == (0, 3, 3, 3)
    out.sum().backward()
    np.testing.assert_array_equal(w.grad, np.zeros((3, 2, 2, 2)))


@pytest.mark.parametrize("keep_bytes", [0, 1 << 30])  # dW from patches made again / kept from forward
@pytest.mark.parametrize("block_bytes", [1, 300, 1 << 20])
@pytest.mark.parametrize("bias_dtype", [np.float32, np.float64])
def test_conv2d_in_image_chunks_matches_the_loop_definition(monkeypatch, keep_bytes, block_bytes, bias_dtype):
    # Big batches copy and multiply the patches a chunk of images at a time (to stay in cache), in forward
    # and, when forward kept no patches, in dW: the chunks, and the bias added to each, must join up exactly,
    # whatever the bias dtype, and dW must not depend on whether the patches were kept.
    monkeypatch.setattr(window_module, "CHUNK_BYTES", block_bytes)
    monkeypatch.setattr(conv_module, "_KEEP_PATCHES_BYTES", keep_bytes)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((5, 2, 7, 6)).astype(np.float32)
    w = mg.Tensor(rng.standard_normal((4, 2, 3, 2)).astype(np.float32), requires_grad=True)
    b = rng.standard_normal(4).astype(bias_dtype)
    out = F.conv2d(x, w, b, padding=1, stride=(2, 1))
    assert out.dtype == np.result_type(x, w.data, b)
    assert (out._ctx.saved_tensors[2] is None) == (keep_bytes == 0)
    np.testing.assert_allclose(out.data, conv2d_loop(x, w.data, b, padding=1, stride=(2, 1)), rtol=1e-5,
                               atol=1e-5)
    g = rng.standard_normal(out.shape).astype(np.float32)
    out.backward(g)
    # dW[o, c, i, j] = sum over n, p, q of g[n, o, p, q] * xpad[n, c, 2p + i, q + j]
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    want = np.stack([np.stack([np.einsum("nopq,ncpq->oc", g, xp[:, :, i : i + 2 * out.shape[2] : 2,
                                                                    j : j + out.shape[3]])
                               for j in range(2)], axis=-1) for i in range(3)], axis=-2)
    np.testing.assert_allclose(w.grad, want, rtol=1e-4, atol=1e-4)


def test_conv2d_big_batch_keeps_no_patches_for_dw():
    # A batch whose patches pass the threshold makes them again in backward instead of holding them
    x = np.zeros((64, 16, 16, 16), dtype=np.float32)  # patches of a 3x3 conv: 9 * 1 MiB
    w = mg.Tensor(np.zeros((4, 16, 3, 3), dtype=np.float32), requires_grad=True)
    assert F.conv2d(x[:8], w, padding=1)._ctx.saved_tensors[2] is not None
    assert F.conv2d(np.zeros((256, 16, 16, 16), dtype=np.float32), w, padding=1)._ctx.saved_tensors[2] is None


def test_conv2d_refuses_a_backward_after_its_input_was_edited_in_place():
    # the first-order weight gradient comes from a copy (the patches), but a second-order one would be
    # computed from x itself: an edit of x between forward and backward is refused, as PyTorch refuses it
    x = np.ones((1, 1, 4, 4))
    w = mg.Tensor(np.ones((1, 1, 2, 2)), requires_grad=True)
    out = F.conv2d(x, w)
    x[...] = 100.0
    with pytest.raises(RuntimeError, match=r"input 0 .* op 'conv2d' was modified in place"):
        out.sum().backward()


@pytest.mark.parametrize(
    ("groups", "error", "message"),
    [
        (0, ValueError, "conv2d: groups must be at least 1, got 0"),
        (True, TypeError, "conv2d: groups must be an int"),
        (1.0, TypeError, "conv2d: groups must be an int"),
    ],
)
def test_groups_by_the_one_int_rule(groups, error, message):
    x, w = mg.Tensor(np.ones((1, 2, 3, 3), np.float32)), mg.Tensor(np.ones((2, 2, 1, 1), np.float32))
    with pytest.raises(error, match=message):
        F.conv2d(x, w, groups=groups)
