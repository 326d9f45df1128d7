import math
from collections import OrderedDict

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from microgradcnn import functional as F
from microgradcnn import nn
from microgradcnn.tensor import Tensor
from microgradcnn.testing import gradcheck


def rng(seed=0):
    return np.random.default_rng(seed)


def reference_conv(x, w, b, stride, padding):
    """Direct float64 cross-correlation with NumPy windows (groups=1, dilation=1)."""
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    win = sliding_window_view(xp, w.shape[2:], axis=(2, 3))[:, :, ::stride, ::stride]
    return np.einsum("nchwij,ocij->nohw", win, w) + b[None, :, None, None]


def test_linear_computes_x_wt_plus_b():
    layer = nn.Linear(5, 3, rng=rng())
    x = rng(1).standard_normal((4, 5)).astype(np.float32)
    out = layer(Tensor(x))
    assert out.shape == (4, 3)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.data, x @ layer.weight.data.T + layer.bias.data, rtol=1e-5, atol=1e-6)
    assert layer.weight.shape == (3, 5)
    assert layer.bias.shape == (3,)


def test_linear_without_bias_registers_none():
    layer = nn.Linear(5, 3, bias=False, rng=rng())
    assert layer.bias is None
    assert [n for n, _ in layer.named_parameters()] == ["weight"]
    x = np.ones((2, 5), dtype=np.float32)
    np.testing.assert_allclose(layer(Tensor(x)).data, x @ layer.weight.data.T, rtol=1e-6)
    assert repr(layer) == "Linear(in_features=5, out_features=3, bias=False)"


@pytest.mark.parametrize(("stride", "padding"), [(1, 0), (2, 1), (1, 2)])
def test_conv2d_matches_a_direct_cross_correlation(stride, padding):
    layer = nn.Conv2d(3, 4, 3, stride=stride, padding=padding, rng=rng())
    x = rng(1).standard_normal((2, 3, 9, 8)).astype(np.float32)
    out = layer(Tensor(x))
    expected = reference_conv(x.astype(np.float64), layer.weight.data, layer.bias.data, stride, padding)
    assert out.shape == expected.shape
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.data, expected, rtol=1e-4, atol=1e-5)


def test_conv2d_matches_pytorch_with_the_same_weights():
    torch = pytest.importorskip("torch")
    layer = nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2, rng=rng())
    theirs = torch.nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(layer.weight.data))
        theirs.bias.copy_(torch.from_numpy(layer.bias.data))
    x = rng(1).standard_normal((2, 4, 7, 9)).astype(np.float32)
    np.testing.assert_allclose(
        layer(Tensor(x)).data, theirs(torch.from_numpy(x)).detach().numpy(), rtol=1e-4, atol=1e-5
    )
    assert repr(layer) == repr(theirs)


def test_conv2d_parameter_shapes_and_repr_follow_pytorch():
    layer = nn.Conv2d(4, 6, 3, groups=2, bias=False, padding=1, rng=rng())
    assert layer.weight.shape == (6, 2, 3, 3)
    assert layer.bias is None
    assert layer.kernel_size == (3, 3)
    assert layer.stride == (1, 1)
    assert layer.padding == (1, 1)
    assert (
        repr(layer) == "Conv2d(4, 6, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), groups=2, bias=False)"
    )


def test_conv_transpose2d_matches_pytorch_with_its_state_dict():
    torch = pytest.importorskip("torch")
    args = {"stride": (2, 1), "padding": (1, 0), "output_padding": (1, 0), "groups": 2, "dilation": (1, 2)}
    theirs = torch.nn.ConvTranspose2d(4, 6, (3, 2), **args).double()
    ours = nn.ConvTranspose2d(4, 6, (3, 2), **args, rng=rng())
    state = {k: v.detach().numpy() for k, v in theirs.state_dict().items()}
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in state.items()}
    assert list(ours.state_dict()) == list(state) == ["weight", "bias"]
    ours.load_state_dict(state)
    x = rng(1).standard_normal((2, 4, 5, 6))
    tx = torch.tensor(x, requires_grad=True)
    tout = theirs(tx)
    mx = Tensor(x, requires_grad=True)
    mine = ours.to(np.float64)(mx)
    np.testing.assert_allclose(mine.data, tout.detach().numpy(), rtol=1e-10, atol=1e-12)
    g = rng(2).standard_normal(mine.shape)
    mine.backward(g)
    tout.backward(torch.tensor(g))
    pairs = [(mx.grad, tx.grad), (ours.weight.grad, theirs.weight.grad), (ours.bias.grad, theirs.bias.grad)]
    for got, want in pairs:
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-10, atol=1e-12)
    # and back: torch loads ours
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()})
    assert repr(ours) == repr(theirs).replace(", bias=True", "")


def test_conv_transpose2d_parameter_shapes_and_repr_follow_pytorch():
    layer = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2, bias=False,
                               rng=rng())
    assert layer.weight.shape == (4, 3, 3, 3)  # (in_channels, out_channels / groups, KH, KW)
    assert layer.bias is None
    assert repr(layer) == (
        "ConvTranspose2d(4, 6, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), output_padding=(1, 1), "
        "groups=2, bias=False)"
    )
    assert nn.ConvTranspose2d(4, 6, 3, rng=rng()).bias.shape == (6,)


def test_conv_transpose2d_layer_upsamples_and_rejects_bad_arguments():
    up = nn.ConvTranspose2d(3, 2, 4, stride=2, padding=1, rng=rng())
    assert up(Tensor(np.zeros((1, 3, 5, 5), dtype=np.float32))).shape == (1, 2, 10, 10)
    with pytest.raises(ValueError, match=r"ConvTranspose2d: output_padding \(2, 2\) must be smaller"):
        nn.ConvTranspose2d(3, 2, 3, stride=2, output_padding=2)
    with pytest.raises(ValueError, match=r"ConvTranspose2d: in_channels .* divisible by groups"):
        nn.ConvTranspose2d(3, 2, 3, groups=2)
    with pytest.raises(TypeError, match="ConvTranspose2d: kernel_size"):
        nn.ConvTranspose2d(3, 2, 1.5)


@pytest.mark.parametrize(
    ("make", "fan_in"),
    [
        (lambda r: nn.Linear(200, 300, rng=r), 200),
        (lambda r: nn.Conv2d(6, 64, 5, rng=r), 6 * 25),
        (lambda r: nn.Conv2d(6, 60, (3, 2), groups=3, rng=r), 2 * 6),
        (lambda r: nn.ConvTranspose2d(64, 6, 5, rng=r), 6 * 25),  # fan_in from weight.shape[1:] as PyTorch
        (lambda r: nn.ConvTranspose2d(60, 6, (3, 2), groups=3, rng=r), 2 * 6),
    ],
)
def test_default_init_is_uniform_within_one_over_sqrt_fan_in(make, fan_in):
    layer = make(rng())
    bound = 1 / math.sqrt(fan_in)
    w = layer.weight.data
    assert w.dtype == np.float32
    assert layer.bias.dtype == np.float32
    assert np.abs(w).max() <= bound
    assert np.abs(w).max() > 0.95 * bound  # spread over the whole interval, not a narrower one
    # U(-b, b) has variance b^2 / 3
    assert abs(w.var() - bound**2 / 3) < 0.1 * bound**2 / 3
    assert np.abs(layer.bias.data).max() <= bound


def test_init_draws_from_the_given_generator_weight_first():
    a, b = nn.Linear(4, 3, rng=rng(7)), nn.Linear(4, 3, rng=rng(7))
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    np.testing.assert_array_equal(a.bias.data, b.bias.data)
    expected_weight = rng(7).uniform(-0.5, 0.5, size=(3, 4)).astype(np.float32)
    np.testing.assert_array_equal(a.weight.data, expected_weight)
    c = nn.Linear(4, 3, rng=rng(8))
    assert not np.array_equal(a.weight.data, c.weight.data)
    unseeded = nn.Linear(4, 3), nn.Linear(4, 3)
    assert not np.array_equal(unseeded[0].weight.data, unseeded[1].weight.data)


def test_layers_reject_bad_arguments_with_clear_errors():
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(4, 6, 3, groups=4)
    with pytest.raises(TypeError, match="kernel_size"):
        nn.Conv2d(1, 2, 2.5)
    with pytest.raises(ValueError, match="in_channels"):
        nn.Conv2d(0, 2, 3)
    with pytest.raises(ValueError, match="out_features"):
        nn.Linear(3, -1)
    with pytest.raises(TypeError, match=r"Linear: in_features must be an int, got 3\.0"):
        nn.Linear(3.0, 2)
    with pytest.raises(TypeError, match="Conv2d: groups must be an int"):
        nn.Conv2d(2, 2, 3, groups=True)
    with pytest.raises(TypeError, match="rng"):
        nn.Linear(3, 2, rng=np.random.RandomState(0))
    with pytest.raises(ValueError, match="stride"):
        nn.MaxPool2d(2, stride=0)


@pytest.mark.parametrize(
    "make",
    [
        lambda r: nn.Linear(4, 3, rng=r),
        lambda r: nn.Conv2d(2, 3, 3, padding=1, stride=2, rng=r),
        lambda r: nn.ConvTranspose2d(2, 4, 3, stride=2, padding=1, output_padding=1, groups=2, rng=r),
        lambda r: nn.Sequential(
            nn.Conv2d(2, 2, 2, rng=r), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8, 3, rng=r)
        ),
    ],
)
def test_layer_gradients_match_central_differences_in_float64(make):
    layer = make(rng()).to(np.float64)
    shape = (2, 4) if isinstance(layer, nn.Linear) else (2, 2, 5, 5)
    x = Tensor(rng(1).standard_normal(shape), requires_grad=True)
    params = list(layer.parameters())

    def fn(x, *ps):
        return layer(x)

    assert gradcheck(fn, [x, *params])


def test_pooling_layers_default_stride_to_kernel_size():
    x = Tensor(np.arange(2 * 3 * 6 * 6, dtype=np.float32).reshape(2, 3, 6, 6))
    mx, av = nn.MaxPool2d(2), nn.AvgPool2d(3)
    np.testing.assert_array_equal(mx(x).data, x.data.reshape(2, 3, 3, 2, 3, 2).max(axis=(3, 5)))
    np.testing.assert_allclose(av(x).data, x.data.reshape(2, 3, 2, 3, 2, 3).mean(axis=(3, 5)), rtol=1e-6)
    assert repr(mx) == "MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)"
    assert repr(nn.AvgPool2d(2, stride=1, padding=1)) == "AvgPool2d(kernel_size=2, stride=1, padding=1)"


def test_pooling_layers_take_pytorchs_arguments_and_reprs():
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, 7, 6)))
    mx = nn.MaxPool2d(3, stride=2, padding=1, dilation=2, ceil_mode=True)
    assert repr(mx) == "MaxPool2d(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True)"
    np.testing.assert_array_equal(mx(x).data, F.max_pool2d(x, 3, 2, 1, 2, True).data)
    av = nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)
    assert repr(av) == "AvgPool2d(kernel_size=3, stride=2, padding=1)"  # PyTorch's repr leaves the flags out
    np.testing.assert_array_equal(av(x).data, F.avg_pool2d(x, 3, 2, 1, True, False).data)
    # PyTorch's fifth positional argument of MaxPool2d is return_indices: ours is keyword-only, not ceil_mode
    with pytest.raises(TypeError):
        nn.MaxPool2d(2, 2, 0, 1, True)
    with pytest.raises(ValueError, match="MaxPool2d: dilation must be at least 1"):
        nn.MaxPool2d(2, dilation=0)


@pytest.mark.parametrize("output_size", [1, 2, (3, None), (None, 4)])
def test_adaptive_avg_pool2d_layer(output_size):
    x = Tensor(np.random.default_rng(1).standard_normal((2, 3, 5, 6)))
    layer = nn.AdaptiveAvgPool2d(output_size)
    assert repr(layer) == f"AdaptiveAvgPool2d(output_size={output_size})"
    np.testing.assert_array_equal(layer(x).data, F.adaptive_avg_pool2d(x, output_size).data)
    assert list(layer.parameters()) == []


def test_pool_layers_equal_torch_modules():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(2).standard_normal((2, 3, 7, 6))
    pairs = [
        (nn.MaxPool2d(3, 2, 1, 2, ceil_mode=True), torch.nn.MaxPool2d(3, 2, 1, 2, ceil_mode=True)),
        (nn.MaxPool2d((2, 3), ceil_mode=True), torch.nn.MaxPool2d((2, 3), ceil_mode=True)),
        (nn.AvgPool2d(3, 2, 1, True, False), torch.nn.AvgPool2d(3, 2, 1, True, False)),
        (nn.AvgPool2d(2, padding=1, ceil_mode=True), torch.nn.AvgPool2d(2, padding=1, ceil_mode=True)),
        (nn.AdaptiveAvgPool2d((4, None)), torch.nn.AdaptiveAvgPool2d((4, None))),
        (nn.AdaptiveAvgPool2d(1), torch.nn.AdaptiveAvgPool2d(1)),
    ]
    for ours, theirs in pairs:
        assert repr(ours) == repr(theirs)
        t, tx = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        out, tout = ours(t), theirs(tx)
        grad = np.random.default_rng(3).standard_normal(out.shape)
        out.backward(grad)
        tout.backward(torch.tensor(grad))
        np.testing.assert_allclose(out.data, tout.detach().numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(t.grad, tx.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_flatten_merges_the_given_dims():
    x = Tensor(np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5))
    assert nn.Flatten()(x).shape == (2, 60)
    assert nn.Flatten(0)(x).shape == (120,)
    assert nn.Flatten(1, 2)(x).shape == (2, 12, 5)
    np.testing.assert_array_equal(nn.Flatten(1, 2)(x).data, x.data.reshape(2, 12, 5))
    with pytest.raises(ValueError, match="Flatten"):
        nn.Flatten(2, 1)(x)


def test_relu_and_cross_entropy_loss_modules_wrap_functional():
    x = Tensor(np.array([[-1.0, 2.0, 0.5]], dtype=np.float32))
    np.testing.assert_array_equal(nn.ReLU()(x).data, [[0.0, 2.0, 0.5]])
    loss = nn.CrossEntropyLoss(label_smoothing=0.1)
    assert loss(x, [1]).item() == pytest.approx(F.cross_entropy(x, [1], label_smoothing=0.1).item())
    assert nn.CrossEntropyLoss(reduction="none")(x, [1]).shape == (1,)


def test_sequential_runs_children_in_order_and_indexes_like_a_list():
    r = rng()
    seq = nn.Sequential(nn.Linear(3, 4, rng=r), nn.ReLU(), nn.Linear(4, 2, rng=r))
    x = Tensor(rng(1).standard_normal((5, 3)).astype(np.float32))
    np.testing.assert_array_equal(seq(x).data, seq[2](seq[1](seq[0](x))).data)
    assert len(seq) == 3
    assert list(seq) == [seq[0], seq[1], seq[2]]
    head = seq[:2]
    assert isinstance(head, nn.Sequential)
    assert head[0] is seq[0]
    assert [n for n, _ in head.named_parameters()] == ["0.weight", "0.bias"]
    assert seq[-1] is seq[2]
    with pytest.raises(IndexError, match="out of range"):
        seq[3]
    seq.append(nn.ReLU())
    assert len(seq) == 4
    assert [n for n, _ in seq.named_children()][-1] == "3"
    with pytest.raises(TypeError, match="Module"):
        nn.Sequential(nn.ReLU(), lambda t: t)
    assert isinstance(nn.Sequential(OrderedDict(a=nn.ReLU()))[0], nn.ReLU)
