"""The PyTorch hand-off: our state_dict loads into the torch twin of each model and back with the same
outputs, optimizer state carries over, and the models as torch.onnx.export writes them load here."""

import warnings

import numpy as np
import pytest
from onnx_models import BUILDERS, digits

import microgradcnn as mg

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
tnn = torch.nn


def twin(name):
    """The torch model with the same layers and the same state_dict names as ``BUILDERS[name]``."""
    if name == "seed":
        return tnn.Sequential(
            tnn.Conv2d(1, 8, 3), tnn.MaxPool2d(2), tnn.Flatten(), tnn.Linear(13 * 13 * 8, 10)
        )
    if name == "cnn2":
        return tnn.Sequential(
            tnn.Conv2d(1, 16, 5),
            tnn.ReLU(),
            tnn.MaxPool2d(2),
            tnn.Conv2d(16, 32, 5),
            tnn.ReLU(),
            tnn.MaxPool2d(2),
            tnn.Flatten(),
            tnn.Linear(512, 10),
        )
    if name == "lenet5":
        return tnn.Sequential(
            tnn.Conv2d(1, 6, 5, padding=2),
            tnn.Tanh(),
            tnn.AvgPool2d(2),
            tnn.Conv2d(6, 16, 5),
            tnn.Tanh(),
            tnn.AvgPool2d(2),
            tnn.Flatten(),
            tnn.Linear(400, 120),
            tnn.Tanh(),
            tnn.Linear(120, 84),
            tnn.Tanh(),
            tnn.Linear(84, 10),
        )
    if name == "bn":
        return tnn.Sequential(
            tnn.Conv2d(1, 16, 5, bias=False),
            tnn.BatchNorm2d(16),
            tnn.ReLU(),
            tnn.MaxPool2d(2),
            tnn.Conv2d(16, 32, 5, bias=False),
            tnn.BatchNorm2d(32),
            tnn.ReLU(),
            tnn.MaxPool2d(2),
            tnn.Flatten(),
            tnn.Linear(512, 128, bias=False),
            tnn.BatchNorm1d(128),
            tnn.ReLU(),
            tnn.Dropout(0.25),
            tnn.Linear(128, 10),
        )
    return tnn.Sequential(
        tnn.Conv2d(1, 4, 3, stride=2, padding=1),
        tnn.ReLU(),
        tnn.Conv2d(4, 8, 3, dilation=2, padding=2, groups=2),
        tnn.AvgPool2d(2),
        tnn.ReLU(),
        tnn.MaxPool2d(3, stride=2, padding=1),
        tnn.Flatten(),
        tnn.Linear(128, 10),
    )


def ours(model, x):
    with mg.no_grad():
        return model(mg.Tensor(x)).data


def theirs(model, x):
    model.eval()  # BatchNorm's running statistics, no dropout: as ours in BUILDERS
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_our_state_dict_loads_into_the_torch_twin_and_back(model, model_name):
    t = twin(model_name)
    t.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    np.testing.assert_allclose(theirs(t, digits(5)), ours(model, digits(5)), atol=1e-5)
    fresh = BUILDERS[model_name]()
    with torch.no_grad():
        for p in t.parameters():
            p.mul_(0.5)  # torch-side training stands in here: weights we have not seen
    fresh.load_state_dict({k: v.numpy() for k, v in t.state_dict().items()})
    np.testing.assert_allclose(ours(fresh, digits(3)), theirs(t, digits(3)), atol=1e-5)


def torch_grads(t, x, y):
    t.zero_grad()
    torch.nn.functional.cross_entropy(t(torch.from_numpy(x)), torch.from_numpy(y)).backward()


def our_grads(model, x, y):
    model.zero_grad()
    mg.functional.cross_entropy(model(mg.Tensor(x)), y).backward()


@pytest.mark.parametrize(
    ("ours_cls", "theirs_cls", "kwargs"),
    [
        ("SGD", "SGD", {"lr": 0.05, "momentum": 0.9}),
        ("Adam", "Adam", {"lr": 1e-3}),
    ],
)
def test_optimizer_state_carries_over_to_torch(ours_cls, theirs_cls, kwargs):
    model = BUILDERS["seed"]()
    opt = getattr(mg.optim, ours_cls)(model.parameters(), **kwargs)
    x, y = digits(8), np.arange(8) % 10
    for _ in range(2):
        our_grads(model, x, y)
        opt.step()
    t = twin("seed")
    t.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    topt = getattr(torch.optim, theirs_cls)(t.parameters(), **kwargs)
    # the recipe of docs/interop.md: torch's own param_groups, our per-parameter state as tensors
    state = topt.state_dict()
    state["state"] = {
        i: {k: torch.tensor(v) for k, v in s.items()} for i, s in opt.state_dict()["state"].items()
    }
    topt.load_state_dict(state)
    our_grads(model, x, y)
    opt.step()
    torch_grads(t, x, y.astype(np.int64))
    topt.step()
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(t.state_dict()[name].numpy(), value, atol=1e-6, err_msg=name)


def torch_twin_of(model, model_name):
    """The torch twin with our state_dict (BatchNorm's buffers included), in eval mode."""
    t = twin(model_name)
    t.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    return t.eval()


def torch_export(t, path, training=None):
    """``torch.onnx.export`` of ``t`` in eval mode. By default (TrainingMode.EVAL) torch folds each
    BatchNorm that follows a conv into the conv's weights; ``TrainingMode.PRESERVE`` keeps it a
    BatchNormalization node (with training_mode=0 for a model in eval mode)."""
    t.eval()
    training = torch.onnx.TrainingMode.EVAL if training is None else training
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        # dynamo=False: the TorchScript exporter, which needs no onnxscript (not installed offline)
        torch.onnx.export(
            t,
            (torch.zeros(1, 1, 28, 28),),
            str(path),
            dynamo=False,
            training=training,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        )
    return path


def test_models_exported_by_torch_load_here(tmp_path, model, model_name):
    t = torch_twin_of(model, model_name)
    loaded = mg.onnx.load(torch_export(t, tmp_path / "torch.onnx"))
    if model_name == "bn":  # the convs' BatchNorms are folded into them, the last one stays
        assert {"10.weight", "10.bias", "10.running_mean", "10.running_var", "13.weight"} <= set(
            loaded.state_dict()
        )
    else:
        assert list(loaded.state_dict()) == list(model.state_dict())
    for n in (1, 5):
        np.testing.assert_allclose(ours(loaded, digits(n, n)), ours(model, digits(n, n)), atol=1e-5)
    x = mg.Tensor(digits(2, dtype=np.float64))
    assert mg.testing.check_module_gradients(loaded, x)


def test_a_view_flatten_from_torch_loads(tmp_path):
    class ViewNet(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv = tnn.Conv2d(1, 2, 3)
            self.fc = tnn.Linear(2 * 26 * 26, 3)

        def forward(self, x):
            h = torch.relu(self.conv(x))
            return torch.log_softmax(self.fc(h.view(h.size(0), -1)), dim=1)

    t = ViewNet()
    loaded = mg.onnx.load(torch_export(t, tmp_path / "view.onnx"))
    for n in (1, 4):
        np.testing.assert_allclose(ours(loaded, digits(n)), theirs(t, digits(n)), atol=1e-5)


@pytest.mark.parametrize("untrained", [False, True])
def test_batchnorm_nodes_from_torch_load_with_their_names(tmp_path, untrained):
    """TrainingMode.PRESERVE: every BatchNorm a BatchNormalization node. Untrained, torch's exporter hands
    one initializer to two inputs (running_var is the weight's ones, running_mean the bias's zeros): the
    values and gradients still come out right."""
    model = BUILDERS["bn"]()
    t = torch_twin_of(model, "bn")
    if untrained:
        t = twin("bn").eval()
    path = torch_export(t, tmp_path / "bn.onnx", training=torch.onnx.TrainingMode.PRESERVE)
    import onnx

    assert [n.op_type for n in onnx.load(str(path)).graph.node].count("BatchNormalization") == 3
    loaded = mg.onnx.load(path)
    if not untrained:
        for layer in ("1", "5", "10"):
            for name in ("weight", "bias", "running_mean", "running_var"):
                key = f"{layer}.{name}"
                np.testing.assert_array_equal(loaded.state_dict()[key], model.state_dict()[key], err_msg=key)
    for n in (1, 5):
        np.testing.assert_allclose(ours(loaded, digits(n, n)), theirs(t, digits(n, n)), atol=1e-5)
    assert mg.testing.check_module_gradients(loaded, mg.Tensor(digits(2, dtype=np.float64)))


def test_activations_exported_by_torch_load_here(tmp_path):
    """torch writes gelu as Div, Erf, Add and Mul at opset 17, and LeakyRelu, Elu, Softplus as such."""

    class Acts(tnn.Module):
        def __init__(self):
            super().__init__()
            self.fc = tnn.Linear(784, 8)

        def forward(self, x):
            h = self.fc(x.flatten(1)) * 8.0
            out = torch.nn.functional.gelu(h) + torch.nn.functional.gelu(h, approximate="tanh")
            return out + torch.nn.functional.leaky_relu(h, 0.2) + torch.nn.functional.elu(h, 0.7) + (
                torch.nn.functional.softplus(h)
            )

    t = Acts()
    loaded = mg.onnx.load(torch_export(t, tmp_path / "acts.onnx"))
    for n in (1, 5):
        np.testing.assert_allclose(ours(loaded, digits(n, n)), theirs(t, digits(n, n)), atol=1e-5, rtol=1e-5)
    assert mg.testing.check_module_gradients(loaded, mg.Tensor(digits(2, dtype=np.float64)))
