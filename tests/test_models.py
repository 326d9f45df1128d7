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


@pytest.mark.parametrize("name", ["seed", "cnn2", "lenet5", "bn"])
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


def test_lenet5_is_the_classic_layout():
    model = models.lenet5(rng=np.random.default_rng(0))
    kinds = [type(m).__name__ for m in model]
    assert kinds == ["Conv2d", "Tanh", "AvgPool2d", "Conv2d", "Tanh", "AvgPool2d", "Flatten",
                     "Linear", "Tanh", "Linear", "Tanh", "Linear"]
    shapes = [p.shape for p in model.parameters()]
    assert shapes == [(6, 1, 5, 5), (6,), (16, 6, 5, 5), (16,), (120, 400), (120,), (84, 120), (84,),
                      (10, 84), (10,)]
    assert model(Tensor(images(2))).shape == (2, 10)


def torch_bn_cnn(torch):
    T = torch.nn
    return T.Sequential(
        T.Conv2d(1, 16, 5, bias=False), T.BatchNorm2d(16), T.ReLU(), T.MaxPool2d(2),
        T.Conv2d(16, 32, 5, bias=False), T.BatchNorm2d(32), T.ReLU(), T.MaxPool2d(2), T.Flatten(),
        T.Linear(512, 128, bias=False), T.BatchNorm1d(128), T.ReLU(), T.Dropout(0.25), T.Linear(128, 10),
    )


def test_bn_cnn_matches_torch_in_eval_and_its_state_dict_round_trips():
    torch = pytest.importorskip("torch")
    ours = models.bn_cnn(rng=np.random.default_rng(0))
    x = images(6)
    ours(Tensor(x))  # one training step moves the running statistics away from 0 and 1
    theirs = torch_bn_cnn(torch)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in ours.state_dict().items()})
    ours.eval()
    theirs.eval()
    np.testing.assert_allclose(ours(Tensor(x)).data, theirs(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-4, atol=1e-5)
    back = models.bn_cnn(rng=np.random.default_rng(1))
    back.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    for k, v in ours.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[k], v, err_msg=k)


def test_bn_cnn_trains_with_batch_statistics_and_predicts_with_running_ones():
    model = models.bn_cnn(rng=np.random.default_rng(0))
    x = Tensor(images(4))
    a, b = model(x).data, model(x).data
    assert not np.array_equal(a, b)  # dropout masks differ per call in training
    assert model[1].num_batches_tracked == 2
    model.eval()
    np.testing.assert_array_equal(model(x).data, model(x).data)
    single = model(Tensor(images(1)))  # one image is fine with running statistics
    assert single.shape == (1, 10)
    assert model[1].num_batches_tracked == 2


def test_same_seed_same_dropout_masks():
    a, b = models.bn_cnn(rng=np.random.default_rng(4)), models.bn_cnn(rng=np.random.default_rng(4))
    x = Tensor(images(3))
    np.testing.assert_array_equal(a(x).data, b(x).data)


def small_bn_model(rng=None):
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, bias=False, rng=rng), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(4 * 13 * 13, 10, rng=rng),
    )


def test_a_batchnorm_model_resumes_from_its_checkpoint_bit_for_bit(tmp_path, monkeypatch):
    from microgradcnn import train as training

    monkeypatch.setitem(models.MODELS, "small-bn", small_bn_model)
    r = np.random.default_rng(0)
    y = r.integers(0, 10, 64)
    x = (r.integers(0, 60, (64, 28, 28)) + 18 * y[:, None, None]).astype(np.uint8)
    data = (x[:48], y[:48], x[48:], y[48:])

    def cfg(epochs):
        return training.TrainConfig(model="small-bn", epochs=epochs, batch_size=8)

    quiet = {"data": data, "log": lambda s: None}
    straight = training.fit(cfg(3), out=tmp_path / "a.npz", **quiet)
    training.fit(cfg(1), out=tmp_path / "b.npz", **quiet)
    resumed = training.fit(cfg(3), out=tmp_path / "b.npz", resume=tmp_path / "b.npz", **quiet)
    mine, ref = resumed.model.state_dict(), straight.model.state_dict()
    assert "1.running_var" in mine
    assert mine["1.num_batches_tracked"] == 3 * 6
    for k, v in ref.items():
        assert np.array_equal(mine[k], v), k
    assert [h["test_loss"] for h in resumed.history] == [h["test_loss"] for h in straight.history]
