"""The models the ONNX tests export and import: the seed CNN, cnn2, a conv stack with every conv option and
both pools (padded max pooling included), LeNet-5, the BatchNorm + Dropout CNN with trained-looking running
statistics, a model of every other mapped op, one of the activations, and one with a user's op."""

import numpy as np

import microgradcnn as mg
from microgradcnn import models, nn


def conv_stack(rng=None):
    """Strided, padded, dilated and grouped convs, average pooling and padded max pooling: (N, 1, 28, 28)
    -> (N, 4, 14, 14) -> (N, 8, 14, 14) -> avg (N, 8, 7, 7) -> max, pad 1 (N, 8, 4, 4) -> (N, 10)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2, padding=1, rng=rng),
        nn.ReLU(),
        nn.Conv2d(4, 8, (3, 3), dilation=2, padding=2, groups=2, rng=rng),
        nn.AvgPool2d(2),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 10, rng=rng),
    )


def bn_cnn(rng=None):
    """models.bn_cnn in eval mode, its BatchNorm weights, biases and running statistics drawn from ``rng``
    (not the init's ones and zeros, which would let a fold of the statistics into the weights go unseen)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    model = models.bn_cnn(rng=rng)
    for layer in model.modules():
        if isinstance(layer, nn.BatchNorm2d | nn.BatchNorm1d):
            c = layer.num_features
            layer.weight.data[...] = rng.uniform(0.5, 1.5, c)
            layer.bias.data[...] = rng.uniform(-0.5, 0.5, c)
            layer.running_mean[...] = rng.uniform(-0.2, 0.2, c)
            layer.running_var[...] = rng.uniform(0.5, 2.0, c)
            layer.num_batches_tracked[...] = 7
    return model.eval()


BUILDERS = {
    "seed": lambda: models.seed_cnn(rng=np.random.default_rng(1)),
    "cnn2": lambda: models.small_cnn(rng=np.random.default_rng(2)),
    "stack": lambda: conv_stack(np.random.default_rng(3)),
    "lenet5": lambda: models.lenet5(rng=np.random.default_rng(4)),
    "bn": lambda: bn_cnn(np.random.default_rng(5)),
}


def forward(model, x):
    """``model``'s output on the array ``x`` as an array, unrecorded."""
    with mg.no_grad():
        return model(mg.Tensor(x)).data


def run_ort(path, x):
    """The ONNX file at ``path`` run on ``x`` by ONNX Runtime (CPU): its first output."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def digits(n, seed=0, dtype=np.float32):
    """``n`` random inputs shaped like the models' digits, (n, 1, 28, 28)."""
    return np.random.default_rng(seed).uniform(-0.5, 0.5, size=(n, 1, 28, 28)).astype(dtype)


# ---- hand-made files (the onnx package is imported when one is made) -------------------------------------
def save(tmp_path, nodes, initializers=(), name="m.onnx", in_shape=("N", 4), out_shape=("N", "M"), opset=17):
    """A hand-made one-input (``x``), one-output (``y``) float model of ``nodes``, written to ``tmp_path``."""
    import onnx

    helper, TP = onnx.helper, onnx.TensorProto
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TP.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info("y", TP.FLOAT, list(out_shape))],
        initializer=list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    path = tmp_path / name
    path.write_bytes(model.SerializeToString())
    return path


def weight(name, shape, seed=0):
    """A standard-normal float32 initializer named ``name``."""
    import onnx

    arr = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return onnx.numpy_helper.from_array(arr, name)


class EveryOp(nn.Module):
    """Each mapped op outside the CNN layers once, batch-independent: (N, 1, 28, 28) -> (N, 4)."""

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        self.fc = nn.Linear(28, 4, rng=rng)
        self.w = nn.Parameter(rng.uniform(-1, 1, size=(4, 4)).astype(np.float32))

    def forward(self, x):
        h = self.fc(x[:, 0, 1:27:2])  # getitem int and slices; linear on a 3-d input (MatMul + Add)
        h = (h.tanh() - h.sigmoid() * 0.5) / 2.0 + (-h).exp() * 0.1
        h = (h * h + 1.0).log() ** 1.5 + 2.0 ** h.relu() - h.max(axis=1, keepdims=True)
        h = h.transpose(0, 2, 1).reshape(x.shape[0], -1, 13).mean(axis=2) @ self.w  # (N, 4)
        h = mg.functional.softmax(h, axis=1) + mg.functional.log_softmax(h, axis=-1)
        return h + h.sum(axis=1, keepdims=True) * h[:, -1:]


class Activations(nn.Module):
    """Each activation op once on a linear head, arguments off the defaults: (N, 1, 28, 28) -> (N, 8). The
    head's outputs (about -4 to 4) reach past the first softplus's threshold (beta 2, threshold 1.5), so
    both sides of its switch are exercised."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 8, rng=np.random.default_rng(6))
        self.acts = nn.Sequential(
            nn.GELU(), nn.LeakyReLU(0.2), nn.ELU(0.7), nn.Softplus(beta=2.0, threshold=1.5), nn.Softplus()
        )

    def forward(self, x):
        h = self.fc(mg.functional.flatten(x)) * 8.0
        out = mg.functional.gelu(h, approximate="tanh") + mg.functional.erf(h)
        for act in self.acts:
            out = out + act(h)
        return out


class TensorOps(nn.Module):
    """The tensor ops, each once: (N, 1, 28, 28) -> (N, 6). (``where`` with a constant condition: the
    export writes the recorded condition as a constant.)"""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 6, rng=np.random.default_rng(7))

    def forward(self, x):
        h = self.fc(mg.functional.flatten(x))  # (N, 6)
        a, b = h[:, :3], h[:, 3:]
        pair = mg.cat([mg.maximum(a, b), mg.minimum(a, b)], axis=1)  # (N, 6)
        both = mg.stack([pair, (h.abs() + 1.0).sqrt()], axis=1)  # (N, 2, 6)
        both = mg.functional.pad(both.clip(-1.0, None).flip(2), (1, 0), value=0.5)[:, :, :6]
        spread = h.var(axis=1, keepdims=True) + h.std(axis=1, keepdims=True, ddof=1)
        h = mg.where(np.array([True, False, True, True, False, False]), h.clip(None, 0.5), h * 0.5)
        return both.logsumexp(axis=1) + spread.expand(x.shape[0], 6) * 0.1 + h


class Softsign(mg.Function, register=False):
    """x / (1 + |x|): an op of the user's with no built-in ONNX mapping."""

    name = "onnx_test_softsign"

    @staticmethod
    def forward(ctx, x):
        denom = 1 + np.abs(x)
        ctx.save_for_backward(denom)
        return x / denom

    @staticmethod
    def backward(ctx, grad):
        (denom,) = ctx.saved_tensors
        return (grad / (denom * denom),)


class SoftsignModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 3, rng=np.random.default_rng(0))

    def forward(self, x):
        return Softsign.apply(self.fc(mg.functional.flatten(x)))
