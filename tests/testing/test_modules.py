"""check_module_gradients: passes right modules (the seed CNN), names wrong parameter and input gradients."""

from __future__ import annotations

import numpy as np
import pytest

import microgradcnn as mg
from microgradcnn import functional as F
from microgradcnn import nn
from microgradcnn.models import seed_cnn
from microgradcnn.testing import GradcheckError, check_module_gradients
from microgradcnn.testing.modules import COORDINATE_MAX_SIZE

RNG = np.random.default_rng(0)


class _GainFn(mg.Function, register=False):
    """x * gain (gain broadcast over the last axis), with switchable bugs in its backward."""

    name = "test_gain"
    broken = ""  # "gain": the gain's gradient is 1.5x too big; "x": the input's is

    @staticmethod
    def forward(ctx, x, gain):
        ctx.save_for_backward(x, gain)
        return x * gain

    @staticmethod
    def backward(ctx, grad):
        x, gain = ctx.saved_tensors
        dx, dgain = grad * gain, grad * x
        bug = _GainFn.broken
        return (1.5 * dx if bug == "x" else dx), (1.5 * dgain if bug == "gain" else dgain)


class Gain(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.gain = nn.Parameter(RNG.uniform(0.5, 1.5, n).astype(np.float32))

    def forward(self, x):
        return _GainFn.apply(x, self.gain)


class Net(nn.Module):
    """Linear -> Gain, so the broken parameter sits at the dotted name 'head.gain'."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.body = nn.Linear(n_in, n_out, rng=np.random.default_rng(1))
        self.head = Gain(n_out)

    def forward(self, x):
        return self.head(self.body(x).tanh())


@pytest.fixture
def broken(monkeypatch):
    def set_bug(where):
        monkeypatch.setattr(_GainFn, "broken", where)

    return set_bug


def _x(*shape):
    return RNG.uniform(-1, 1, shape).astype(np.float32)


@pytest.mark.parametrize("relu", [False, True], ids=["seed", "seed-relu"])
def test_seed_cnn_passes(relu):
    model = seed_cnn(relu=relu, rng=np.random.default_rng(0))
    assert sum(p.size for p in model.parameters()) == 13_610
    assert check_module_gradients(model, _x(2, 1, 28, 28) / 2) is True


def test_seed_cnn_passes_with_cross_entropy_loss_and_labels():
    model = seed_cnn(rng=np.random.default_rng(0))
    labels = np.array([3, 7, 0])
    assert check_module_gradients(model, _x(3, 1, 28, 28), loss=lambda out: F.cross_entropy(out, labels))


@pytest.mark.parametrize(("n", "where"), [(6, r"index \(\d,\)"), (100, "random direction")],
                         ids=["coordinates", "directions"])
def test_names_the_dotted_name_of_a_wrong_parameter_gradient(broken, n, where):
    assert (n <= COORDINATE_MAX_SIZE) == (where != "random direction")
    model = Net(3, n)
    x = _x(4, 3)
    assert check_module_gradients(model, x)
    broken("gain")
    want = rf"check_module_gradients\(Net\): gradient of head\.gain \(shape \({n},\)\) is wrong at {where}"
    with pytest.raises(GradcheckError, match=want):
        check_module_gradients(model, x)


@pytest.mark.parametrize("shape", [(2, 5), (30, 5)], ids=["coordinates", "directions"])
def test_catches_a_wrong_input_gradient(broken, shape):
    broken("x")
    with pytest.raises(GradcheckError, match=rf"gradient of input 0 \(shape \({shape[0]}, 5\)\)"):
        check_module_gradients(Gain(5), _x(*shape))


def test_checks_inputs_after_parameters_and_only_float_ones(broken):
    class Picker(nn.Module):
        def __init__(self):
            super().__init__()
            self.gain = Gain(4)

        def forward(self, x, rows):
            return self.gain(x[rows])

    broken("x")  # only the input's gradient is wrong, and rows (int64) is passed through unchecked
    with pytest.raises(GradcheckError, match="input 0"):
        check_module_gradients(Picker(), _x(3, 4), np.array([2, 0, 2]))


def test_the_module_and_the_inputs_are_left_untouched():
    model = Net(3, 5)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    x = mg.Tensor(_x(4, 3), requires_grad=True)
    x_before = x.data.copy()
    assert check_module_gradients(model, x)
    for name, p in model.named_parameters():
        assert p.dtype == np.float32
        assert p.grad is None
        np.testing.assert_array_equal(p.data, before[name])
    assert x.dtype == np.float32
    assert x.grad is None
    np.testing.assert_array_equal(x.data, x_before)


def test_frozen_parameters_are_skipped(broken):
    model = Net(3, 5)
    model.head.gain.requires_grad = False
    broken("gain")  # its (wrong) gradient is never asked for
    assert check_module_gradients(model, _x(4, 3))


def test_loss_must_be_a_one_element_tensor():
    model = Gain(3)
    with pytest.raises(ValueError, match=r"loss must return one element, got shape \(2, 3\)"):
        check_module_gradients(model, _x(2, 3), loss=lambda out: out)
    with pytest.raises(TypeError, match="loss must return a Tensor, got float"):
        check_module_gradients(model, _x(2, 3), loss=lambda out: 1.0)


def test_a_non_tensor_output_needs_a_loss():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.gain = Gain(3)

        def forward(self, x):
            y = self.gain(x)
            return y, y * 2

    with pytest.raises(TypeError, match="module returned a tuple; pass loss="):
        check_module_gradients(Pair(), _x(2, 3))
    assert check_module_gradients(Pair(), _x(2, 3), loss=lambda ys: (ys[0] * ys[1]).sum())


def test_a_random_forward_is_rejected():
    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.gain = Gain(3)
            self.rng = np.random.default_rng(0)

        def forward(self, x):
            return self.gain(x) * self.rng.uniform(0.5, 1.5, x.shape)

    with pytest.raises(ValueError, match="must be deterministic"):
        check_module_gradients(Noisy(), _x(2, 3))


def test_a_non_finite_loss_is_rejected():
    with pytest.raises(ValueError, match=r"the loss is -?inf; gradients can only be checked where"):
        check_module_gradients(Gain(2), _x(2, 2), loss=lambda out: out.sum() * np.inf)


def test_wants_a_module():
    with pytest.raises(TypeError, match=r"want an nn\.Module"):
        check_module_gradients(lambda x: x, _x(2))
