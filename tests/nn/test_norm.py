"""BatchNorm1d / BatchNorm2d: PyTorch parity in float64 over several steps, buffers, modes and errors."""

import numpy as np
import pytest

from microgradcnn import nn
from microgradcnn.tensor import Tensor

SHAPES = {"BatchNorm1d": [(5, 3), (4, 3, 6)], "BatchNorm2d": [(4, 3, 5, 2)]}
CASES = [(layer, shape) for layer, shapes in SHAPES.items() for shape in shapes]
KEYS = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]


def batches(shape, steps=4, seed=0):
    rng = np.random.default_rng(seed)  # shifted and scaled so the running statistics move visibly
    return [rng.standard_normal(shape) * (1 + i) + 2 * i - 1 for i in range(steps)]


def pair(layer, **kwargs):
    """Our layer in float64 with random affine parameters, and torch's with the same state."""
    torch = pytest.importorskip("torch")
    ours = getattr(nn, layer)(3, **kwargs).double()
    if ours.affine:
        rng = np.random.default_rng(7)
        ours.weight.data[...] = rng.uniform(0.5, 2.0, 3)
        ours.bias.data[...] = rng.standard_normal(3)
    theirs = getattr(torch.nn, layer)(3, **kwargs).double()
    theirs.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in ours.state_dict().items()})
    return ours, theirs


def step_both(ours, theirs, x, seed):
    """Forward and backward of the same batch and output gradient; returns (ours, theirs) input grads."""
    import torch

    t, tt = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out, tout = ours(t), theirs(tt)
    np.testing.assert_allclose(out.data, tout.detach().numpy(), rtol=1e-10, atol=1e-12)
    g = np.random.default_rng(seed).standard_normal(x.shape)
    out.backward(g)
    tout.backward(torch.from_numpy(g))
    np.testing.assert_allclose(t.grad, tt.grad.numpy(), rtol=1e-9, atol=1e-12)
    for name, p in ours.named_parameters():
        q = dict(theirs.named_parameters())[name]
        np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)
    ours.zero_grad()
    theirs.zero_grad()


def assert_same_state(ours, theirs):
    mine, ref = ours.state_dict(), theirs.state_dict()
    assert list(mine) == list(ref)
    for k in mine:
        np.testing.assert_allclose(mine[k], ref[k].numpy(), rtol=1e-12, atol=1e-12, err_msg=k)


@pytest.mark.parametrize(("layer", "shape"), CASES)
@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
def test_training_steps_then_eval_match_torch(layer, shape, momentum):
    ours, theirs = pair(layer, momentum=momentum)
    for i, x in enumerate(batches(shape)):
        step_both(ours, theirs, x, seed=i)
        assert_same_state(ours, theirs)  # running mean, unbiased running variance, batch count
    assert ours.num_batches_tracked == 4
    ours.eval()
    theirs.eval()
    step_both(ours, theirs, batches(shape, 1, seed=9)[0], seed=9)  # running statistics now
    assert ours.num_batches_tracked == 4


@pytest.mark.parametrize(("layer", "shape"), CASES)
@pytest.mark.parametrize("kwargs", [{"affine": False}, {"track_running_stats": False}, {"eps": 0.5}])
def test_variants_match_torch_in_train_and_eval(layer, shape, kwargs):
    ours, theirs = pair(layer, **kwargs)
    for mode in (True, False, True):
        ours.train(mode)
        theirs.train(mode)
        for i, x in enumerate(batches(shape, 2)):
            step_both(ours, theirs, x, seed=i)
    assert_same_state(ours, theirs)


def test_running_var_is_unbiased_and_normalising_var_is_biased():
    bn = nn.BatchNorm1d(1, momentum=1.0).double()  # momentum 1: the running statistics are the batch's
    x = np.array([[1.0], [2.0], [6.0]])
    out = bn(Tensor(x))
    assert bn.running_mean[0] == pytest.approx(3.0)
    assert bn.running_var[0] == pytest.approx(np.var(x, ddof=1))  # 7
    np.testing.assert_allclose(out.data, (x - 3) / np.sqrt(np.var(x) + 1e-5))  # biased: 14/3


def test_eval_uses_the_running_statistics_and_train_switches_back():
    bn = nn.BatchNorm2d(2).double()
    bn.running_mean[...] = [1.0, -1.0]
    bn.running_var[...] = [4.0, 0.25]
    x = np.random.default_rng(0).standard_normal((3, 2, 2, 2))
    mean, var = bn.running_mean[None, :, None, None], bn.running_var[None, :, None, None]
    expected = (x - mean) / np.sqrt(var + 1e-5)
    np.testing.assert_allclose(bn.eval()(Tensor(x)).data, expected)
    batch = bn.train()(Tensor(x)).data
    np.testing.assert_allclose(batch.mean(axis=(0, 2, 3)), 0, atol=1e-12)  # the batch's own statistics


def test_state_dict_has_torch_keys_and_round_trips_through_torch():
    torch = pytest.importorskip("torch")
    ours = nn.Sequential(nn.Conv2d(1, 3, 3, rng=np.random.default_rng(0)), nn.BatchNorm2d(3))
    for x in batches((4, 1, 5, 5), 3):
        ours(Tensor(x.astype(np.float32)))
    theirs = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3))
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["0.weight", "0.bias"] + [
        f"1.{k}" for k in KEYS
    ]
    theirs.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in ours.state_dict().items()})
    back = nn.Sequential(nn.Conv2d(1, 3, 3, rng=np.random.default_rng(1)), nn.BatchNorm2d(3))
    back.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    for k, v in ours.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[k], v, err_msg=k)
    assert back[1].num_batches_tracked.dtype == np.int64
    assert back[1].num_batches_tracked == 3


def test_buffers_follow_to_and_are_not_parameters():
    bn = nn.BatchNorm2d(4)
    assert [n for n, _ in bn.named_parameters()] == ["weight", "bias"]
    assert [n for n, _ in bn.named_buffers()] == KEYS[2:]
    bn.double()
    assert bn.running_mean.dtype == bn.running_var.dtype == np.float64
    assert bn.num_batches_tracked.dtype == np.int64
    assert nn.BatchNorm2d(4, affine=False, track_running_stats=False).state_dict() == {}


def test_float32_layer_on_float32_input_stays_float32():
    bn = nn.BatchNorm2d(3)
    out = bn(Tensor(np.ones((2, 3, 2, 2), dtype=np.float32)))
    out.sum().backward()
    assert out.dtype == bn.weight.grad.dtype == bn.running_var.dtype == np.float32


def test_reset_running_stats_and_repr():
    bn = nn.BatchNorm1d(2)
    bn(Tensor(np.arange(8.0).reshape(4, 2)))
    bn.reset_running_stats()
    assert bn.running_mean.tolist() == [0, 0]
    assert bn.running_var.tolist() == [1, 1]
    assert bn.num_batches_tracked == 0
    assert repr(bn) == "BatchNorm1d(2, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)"


def test_errors_name_the_layer_and_the_shapes():
    with pytest.raises(ValueError, match=r"BatchNorm2d\(3\): expected 3 channels .*\(2, 4, 5, 5\)"):
        nn.BatchNorm2d(3)(Tensor(np.zeros((2, 4, 5, 5))))
    with pytest.raises(ValueError, match=r"BatchNorm2d\(3\): expected 4-d .*got shape \(2, 3, 5\)"):
        nn.BatchNorm2d(3)(Tensor(np.zeros((2, 3, 5))))
    with pytest.raises(ValueError, match=r"BatchNorm1d\(3\): expected 2-d .* or 3-d .*\(2, 3, 4, 4\)"):
        nn.BatchNorm1d(3)(Tensor(np.zeros((2, 3, 4, 4))))
    bn = nn.BatchNorm1d(3)
    with pytest.raises(ValueError, match=r"expected more than 1 value per channel when training.*\(1, 3\)"):
        bn(Tensor(np.zeros((1, 3))))
    assert bn.num_batches_tracked == 0  # the refused batch is not counted
    assert bn.eval()(Tensor(np.zeros((1, 3)))).shape == (1, 3)  # a batch of one is fine in eval
    assert nn.BatchNorm2d(3)(Tensor(np.ones((1, 3, 2, 1)))).shape == (1, 3, 2, 1)  # 2 values per channel
    with pytest.raises(ValueError, match="momentum"):
        nn.BatchNorm2d(3, momentum=1.5)
    with pytest.raises(ValueError, match="eps"):
        nn.BatchNorm2d(3, eps=-1)
    with pytest.raises(ValueError, match="num_features"):
        nn.BatchNorm2d(0)
    with pytest.raises(TypeError, match="num_features"):
        nn.BatchNorm2d(3.0)


@pytest.mark.parametrize("training", [True, False])
def test_check_module_gradients_proves_a_model_with_batchnorm_and_activations(training):
    from microgradcnn.testing import check_module_gradients

    r = np.random.default_rng(0)
    model = nn.Sequential(
        nn.Conv2d(3, 2, 2, bias=False, rng=r), nn.BatchNorm2d(2), nn.GELU(), nn.Flatten(),
        nn.Linear(8, 3, rng=r), nn.BatchNorm1d(3), nn.ELU(), nn.Softplus(), nn.LeakyReLU(),
    )
    model(Tensor(r.standard_normal((4, 3, 3, 3)).astype(np.float32)))  # running statistics off 0 and 1
    assert check_module_gradients(model.train(training), r.standard_normal((4, 3, 3, 3)))
