import numpy as np
import pytest

from microgradcnn import functional as F
from microgradcnn import models, nn, optim
from microgradcnn.tensor import Tensor


def images(n=3, seed=0):
    return np.random.default_rng(seed).uniform(-0.5, 0.5, (n, 1, 28, 28)).astype(np.float32)


def test_seed_cnn_is_the_tutorial_network():
    model = models.seed_cnn(rng=np.random.default_rng(0))
    assert isinstance(model, nn.Sequential)
    kinds = [type(m) for m in model]
    assert kinds == [nn.Conv2d, nn.MaxPool2d, nn.Flatten, nn.Linear]
    shapes = {name: p.shape for name, p in model.named_parameters()}
    assert shapes == {"0.weight": (8, 1, 3, 3), "0.bias": (8,), "3.weight": (10, 1352), "3.bias": (10,)}
    assert model[1].kernel_size == 2
    out = model(Tensor(images()))
    assert out.shape == (3, 10)
    assert out.dtype == np.float32


def test_seed_cnn_relu_inserts_a_relu_after_the_conv():
    model = models.seed_cnn(relu=True, rng=np.random.default_rng(0))
    assert [type(m) for m in model][:3] == [nn.Conv2d, nn.ReLU, nn.MaxPool2d]
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias", "4.weight", "4.bias"]


def test_seed_cnn_matches_pytorch_forward_and_backward_with_the_same_weights():
    torch = pytest.importorskip("torch")
    ours = models.seed_cnn(rng=np.random.default_rng(0))
    theirs = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3), torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(1352, 10)
    )
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    x, y = images(4), np.array([3, 1, 4, 1])
    loss = F.cross_entropy(ours(Tensor(x)), y)
    loss.backward()
    tloss = torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x)), torch.from_numpy(y))
    tloss.backward()
    assert loss.item() == pytest.approx(tloss.item(), rel=1e-5)
    for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters(), strict=True):
        np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-4, atol=1e-6, err_msg=name)


def test_small_cnn_shapes():
    model = models.small_cnn(rng=np.random.default_rng(0))
    out = model(Tensor(images(2)))
    assert out.shape == (2, 10)
    assert sum(p.size for p in model.parameters()) == 16 * 25 + 16 + 32 * 16 * 25 + 32 + 512 * 10 + 10


def test_models_table_names_the_cli_models_and_seeds_them():
    assert {"seed", "cnn2"} <= set(models.MODELS)
    assert models.MODELS["seed"] is models.seed_cnn
    for name, factory in models.MODELS.items():
        a, b = factory(rng=np.random.default_rng(3)), factory(rng=np.random.default_rng(3))
        for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
            assert np.array_equal(p.data, q.data), (name, n)


@pytest.mark.parametrize("name", ["seed", "cnn2"])
def test_a_few_steps_fit_a_small_batch(name):
    # memorising 10 images is the cheapest check that every layer passes useful gradients
    model = models.MODELS[name](rng=np.random.default_rng(0))
    opt = optim.Adam(model.parameters(), lr=3e-3)
    x, y = images(10, seed=1), np.arange(10)
    first = None
    for _ in range(20):
        loss = F.cross_entropy(model(Tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.5 * first
