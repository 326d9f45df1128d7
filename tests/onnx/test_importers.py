"""The importers of microgradcnn/onnx/importers.py that the model tests do not reach: each new node type
against ONNX Runtime on a hand-made file or through a round trip, and the forms that are refused."""

import numpy as np
import pytest
from onnx_models import Activations, TensorOps, digits, forward, run_ort, save, weight

import microgradcnn as mg
from microgradcnn import nn
from microgradcnn.onnx import OnnxError

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
helper, TP = onnx.helper, onnx.TensorProto


@pytest.mark.parametrize("opset", [17, 20])
def test_the_activations_round_trip_with_their_gradients(tmp_path, opset):
    model = Activations()
    loaded = mg.onnx.load(mg.onnx.export(model, digits(1), tmp_path / "m.onnx", opset=opset))
    for n in (1, 5):
        np.testing.assert_allclose(forward(loaded, digits(n, n)), forward(model, digits(n, n)), atol=1e-6)
    assert mg.testing.check_module_gradients(loaded, mg.Tensor(digits(2, dtype=np.float64)))


def test_the_tensor_ops_round_trip_with_their_gradients(tmp_path):
    model = TensorOps()
    path = mg.onnx.export(model, digits(1), tmp_path / "m.onnx")
    assert {"Concat", "Max", "Abs", "Sqrt", "Clip", "Pad", "Expand", "ReduceLogSumExp", "Where"} <= {
        n.op_type for n in onnx.load(str(path)).graph.node
    }
    loaded = mg.onnx.load(path)
    for n in (1, 5):
        np.testing.assert_allclose(forward(loaded, digits(n, n)), forward(model, digits(n, n)), atol=1e-6)
    # (the clip bounds and the pad value are initializers, so Parameters of the loaded model: checked too)
    assert mg.testing.check_module_gradients(loaded, mg.Tensor(digits(2, dtype=np.float64)))


def test_a_transposed_conv_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2, rng=rng),
        nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1, dilation=1, groups=2, rng=rng),
    )
    path = mg.onnx.export(model, digits(1), tmp_path / "m.onnx")
    loaded = mg.onnx.load(path)
    for n in (1, 3):
        np.testing.assert_allclose(forward(loaded, digits(n, n)), forward(model, digits(n, n)), atol=1e-6)
        np.testing.assert_allclose(run_ort(path, digits(n, n)), forward(loaded, digits(n, n)), atol=1e-5)
    assert mg.testing.check_module_gradients(loaded, mg.Tensor(digits(1, dtype=np.float64)))


def test_conv_transpose_with_an_output_shape_is_refused(tmp_path):
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], output_shape=[8, 8], name="up")
    path = save(tmp_path, [node], [weight("w", (1, 1, 3, 3))], in_shape=("N", 1, 4, 4),
                out_shape=("N", 1, 8, 8))
    with pytest.raises(OnnxError, match=r"node 'up' \(ConvTranspose\): the output_shape attribute"):
        mg.onnx.load(path)


def batch_norm_file(tmp_path, **attrs):
    rng = np.random.default_rng(1)
    stats = {
        "scale": rng.uniform(0.5, 1.5, 3), "B": rng.uniform(-1, 1, 3),
        "mean": rng.uniform(-1, 1, 3), "var": rng.uniform(0.5, 2, 3),
    }
    inits = [onnx.numpy_helper.from_array(v.astype(np.float32), k) for k, v in stats.items()]
    node = helper.make_node("BatchNormalization", ["x", *stats], ["y"], name="bn", **attrs)
    return save(tmp_path, [node], inits, in_shape=("N", 3, 4, 4), out_shape=("N", 3, 4, 4)), stats


def test_batch_normalization_matches_onnxruntime(tmp_path):
    path, stats = batch_norm_file(tmp_path, epsilon=0.1)
    x = np.random.default_rng(2).standard_normal((5, 3, 4, 4)).astype(np.float32)
    loaded = mg.onnx.load(path)
    got = forward(loaded, x)
    np.testing.assert_allclose(got, run_ort(path, x), atol=1e-5)
    c = (1, 3, 1, 1)
    want = (x - stats["mean"].reshape(c)) / np.sqrt(stats["var"].reshape(c) + 0.1) * stats["scale"].reshape(
        c
    ) + stats["B"].reshape(c)
    np.testing.assert_allclose(got, want, atol=1e-5)  # epsilon is read, not the default 1e-5
    assert mg.testing.check_module_gradients(loaded, mg.Tensor(x[:2].astype(np.float64)))


def test_batch_normalization_in_training_mode_is_refused(tmp_path):
    path, _ = batch_norm_file(tmp_path, training_mode=1)
    with pytest.raises(OnnxError, match=r"node 'bn' \(BatchNormalization\): training_mode=1"):
        mg.onnx.load(path)


def test_a_plain_softplus_node_has_no_threshold(tmp_path):
    """ONNX's Softplus is log(1 + e^x) everywhere: no switch to x (ours, at its default threshold 20)."""
    path = save(tmp_path, [helper.make_node("Softplus", ["x"], ["y"])], in_shape=("N", 4), out_shape=("N", 4))
    x = np.array([[-30.0, -1.0, 19.0, 25.0]], dtype=np.float64)
    loaded = mg.onnx.load(path)
    np.testing.assert_allclose(forward(loaded, x), np.logaddexp(0, x), rtol=1e-15)
    np.testing.assert_allclose(forward(loaded, x.astype(np.float32)), run_ort(path, x.astype(np.float32)),
                               rtol=1e-6)


@pytest.mark.parametrize(
    ("op_type", "attrs", "want"),
    [
        ("LeakyRelu", {}, lambda x: np.where(x > 0, x, 0.01 * x)),
        ("LeakyRelu", {"alpha": 0.3}, lambda x: np.where(x > 0, x, 0.3 * x)),
        ("Elu", {"alpha": 0.5}, lambda x: np.where(x > 0, x, 0.5 * np.expm1(x))),
        ("Sqrt", {}, lambda x: np.sqrt(np.abs(x))),
    ],
)
def test_attributes_and_defaults_of_the_activation_nodes(tmp_path, op_type, attrs, want):
    nodes = [helper.make_node(op_type, ["x"], ["y"], **attrs)]
    if op_type == "Sqrt":  # on |x| = relu(x) + relu(-x), so every input is in its domain
        nodes = [
            helper.make_node("Neg", ["x"], ["n"]), helper.make_node("Relu", ["x"], ["p"]),
            helper.make_node("Relu", ["n"], ["q"]), helper.make_node("Add", ["p", "q"], ["a"]),
            helper.make_node("Sqrt", ["a"], ["y"]),
        ]
    path = save(tmp_path, nodes, in_shape=("N", 4), out_shape=("N", 4))
    x = np.array([[-2.0, -0.5, 0.25, 3.0]], dtype=np.float32)
    np.testing.assert_allclose(forward(mg.onnx.load(path), x), want(x), rtol=1e-6)
    np.testing.assert_allclose(run_ort(path, x), want(x), rtol=1e-6)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_a_gelu_node_reads_its_approximation(tmp_path, approximate):
    node = helper.make_node("Gelu", ["x"], ["y"], approximate=approximate)
    path = save(tmp_path, [node], in_shape=("N", 4), out_shape=("N", 4), opset=20)
    x = np.array([[-3.0, -0.5, 0.25, 2.0]], dtype=np.float32)
    want = mg.functional.gelu(mg.Tensor(x), approximate=approximate).data
    np.testing.assert_allclose(forward(mg.onnx.load(path), x), want, rtol=1e-6)
    np.testing.assert_allclose(run_ort(path, x), want, atol=1e-6)  # (ONNX Runtime's own float32 rounding)


def test_where_needs_a_boolean_condition(tmp_path):
    nodes = [helper.make_node("Where", ["x", "x", "x"], ["y"], name="pick")]
    path = save(tmp_path, nodes, in_shape=("N", 4), out_shape=("N", 4))
    with pytest.raises(OnnxError, match=r"node 'pick' \(Where\): the condition must be boolean"):
        mg.onnx.load(path)


def initializer(name, values):
    return onnx.numpy_helper.from_array(np.asarray(values, dtype=np.float32), name)


def const(name, values):  # an integer input: pads, axes, shapes
    return onnx.numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


@pytest.mark.parametrize(
    ("nodes", "inits", "out_shape", "opset"),
    [
        ([helper.make_node("Max", ["x", "w"], ["y"])], [initializer("w", [0.0, 1.0, -1.0, 2.0])],
         ("N", 4), 17),
        ([helper.make_node("Min", ["x", "w", "v"], ["y"])],
         [initializer("w", [0.0, 1.0, -1.0, 2.0]), initializer("v", [0.5])], ("N", 4), 17),
        ([helper.make_node("Clip", ["x", "", "hi"], ["y"])], [initializer("hi", 0.5)], ("N", 4), 17),
        ([helper.make_node("Clip", ["x", "lo", "hi"], ["y"])],
         [initializer("lo", -0.5), initializer("hi", 0.5)], ("N", 4), 17),
        ([helper.make_node("Pad", ["x", "p", "v"], ["y"])], [const("p", [0, 1, 0, 2]), initializer("v", 9.0)],
         ("N", 7), 17),
        ([helper.make_node("Pad", ["x", "p", "", "a"], ["y"])], [const("p", [2, -1]), const("a", [-1])],
         ("N", 5), 18),
        ([helper.make_node("Concat", ["x", "x"], ["y"], axis=1)], [], ("N", 8), 17),
        ([helper.make_node("Expand", ["x", "s"], ["y"])], [const("s", [3, 1, 1])], (3, "N", 4), 17),
        ([helper.make_node("Abs", ["x"], ["y"])], [], ("N", 4), 17),
    ],
    ids=["Max", "Min-3", "Clip-high", "Clip", "Pad", "Pad-axes-crop", "Concat", "Expand", "Abs"],
)
def test_the_tensor_op_nodes_match_onnxruntime(tmp_path, nodes, inits, out_shape, opset):
    path = save(tmp_path, nodes, inits, in_shape=("N", 4), out_shape=out_shape, opset=opset)
    x = np.array([[-2.0, 0.25, 0.75, 3.0], [1.0, -0.5, -1.5, 0.0]], dtype=np.float32)
    loaded = mg.onnx.load(path)
    np.testing.assert_allclose(forward(loaded, x), run_ort(path, x), rtol=1e-6)
    assert mg.testing.check_module_gradients(loaded, mg.Tensor(x.astype(np.float64) + 0.1))


def test_a_reflecting_pad_is_refused(tmp_path):
    nodes = [helper.make_node("Pad", ["x", "p"], ["y"], mode="reflect", name="mirror")]
    path = save(tmp_path, nodes, [const("p", [0, 1, 0, 1])], in_shape=("N", 4), out_shape=("N", 6))
    with pytest.raises(OnnxError, match=r"node 'mirror' \(Pad\): mode='reflect' is not supported"):
        mg.onnx.load(path)
