"""The pools' ONNX mapping with every argument: dilation, ceil_mode (windows hanging past the padding, and
PyTorch's dropped last window) and count_include_pad, in ONNX Runtime and back through ``mg.onnx.load``."""

import numpy as np
import pytest

import microgradcnn as mg
from microgradcnn import nn
from microgradcnn.onnx import OnnxError

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
helper, TP = onnx.helper, onnx.TensorProto

POOLS = [
    nn.MaxPool2d(3, 2, 1, 2, ceil_mode=True),
    nn.MaxPool2d(2, ceil_mode=True),
    nn.MaxPool2d(3, 2, 1, ceil_mode=True),
    nn.MaxPool2d(2, 2, 1, ceil_mode=True),  # on odd sides the ceil window would start in the right padding
    nn.MaxPool2d((3, 2), (1, 2), (1, 0), (2, 1)),
    nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
    nn.AvgPool2d(3, 2, 1, ceil_mode=True),
    nn.AvgPool2d(2, 2, 1, ceil_mode=True),
    nn.AvgPool2d(2, 3, 1, ceil_mode=True, count_include_pad=False),
    nn.AvgPool2d(3, 2, 0, ceil_mode=True),  # overhang past an unpadded input: not in the divisor
    nn.AvgPool2d(3, 1, 1, count_include_pad=False),
]


def _run(session, x):
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("opset", [13, 17, 19])
@pytest.mark.parametrize("size", [(7, 6), (8, 5), (5, 5)])
@pytest.mark.parametrize("pool", POOLS, ids=repr)
def test_pools_export_and_match_onnxruntime_and_load_back(tmp_path, pool, size, opset):
    x = np.random.default_rng(sum(size)).standard_normal((2, 3, *size)).astype(np.float32)
    with mg.no_grad():
        want = pool(mg.Tensor(x)).data
    path = mg.onnx.export(nn.Sequential(pool), mg.Tensor(x), tmp_path / "m.onnx", opset=opset)
    got = _run(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]), x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with mg.no_grad():
        again = mg.onnx.load(path)(mg.Tensor(x)).data
    np.testing.assert_allclose(again, want, rtol=1e-6, atol=1e-7)


def _attrs(path):
    (node,) = onnx.load(str(path)).graph.node
    return node.op_type, {a.name: helper.get_attribute_value(a) for a in node.attribute}


def test_the_pool_attributes_are_written(tmp_path):
    x = mg.Tensor(np.zeros((1, 1, 8, 8), np.float32))  # ceil_mode adds a window along both axes
    pool = nn.MaxPool2d(3, 2, 1, (2, 1), ceil_mode=True)
    path = mg.onnx.export(nn.Sequential(pool), x, tmp_path / "a.onnx")
    assert _attrs(path) == ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
                                        "dilations": [2, 1], "ceil_mode": 1})
    odd = mg.Tensor(np.zeros((1, 1, 7, 7), np.float32))
    path = mg.onnx.export(nn.Sequential(nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False)), odd,
                          tmp_path / "b.onnx")
    attrs = _attrs(path)[1]
    assert attrs["ceil_mode"] == 1
    assert attrs["count_include_pad"] == 0


def test_ceil_mode_that_adds_no_window_is_written_as_floor(tmp_path):
    # 5 rows, kernel 2, stride 2, padding 1: ceil would add a window starting at padded row 6 = 5 + padding,
    # which PyTorch drops; ONNX's formula would keep it, so the floor-mode windows (the same ones) are written
    x = mg.Tensor(np.zeros((1, 1, 5, 5), np.float32))
    path = mg.onnx.export(nn.Sequential(nn.MaxPool2d(2, 2, 1, ceil_mode=True)), x, tmp_path / "m.onnx")
    assert _attrs(path)[1]["ceil_mode"] == 0


def _save(tmp_path, node, in_shape, out_shape, opset=17):
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TP.FLOAT, list(in_shape))],
                              [helper.make_tensor_value_info("y", TP.FLOAT, list(out_shape))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize(
    ("op_type", "attrs", "out_hw"),
    [
        ("MaxPool", {"kernel_shape": [2, 2], "dilations": [2, 2], "ceil_mode": 1, "strides": [2, 2]}, (3, 2)),
        # ONNX's default count_include_pad is 0: the padding is not in the divisor
        ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]}, (3, 3)),
        ("AveragePool", {"kernel_shape": [3, 2], "pads": [1, 0, 1, 0], "ceil_mode": 1, "strides": [2, 2],
                         "count_include_pad": 1}, (4, 3)),
    ],
)
def test_hand_written_pools_with_the_new_attributes_load_and_match_ort(tmp_path, op_type, attrs, out_hw):
    path = _save(tmp_path, helper.make_node(op_type, ["x"], ["y"], **attrs), (1, 2, 6, 5), (1, 2, *out_hw))
    x = np.random.default_rng(0).standard_normal((1, 2, 6, 5)).astype(np.float32)
    want = _run(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]), x)
    with mg.no_grad():
        got = mg.onnx.load(path)(mg.Tensor(x)).data
    assert got.shape == want.shape == (1, 2, *out_hw)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_dilated_average_pool_is_refused_naming_the_node(tmp_path):
    node = helper.make_node("AveragePool", ["x"], ["y"], name="avg", kernel_shape=[2, 2], dilations=[2, 2])
    path = _save(tmp_path, node, (1, 1, 6, 6), (1, 1, 2, 2), opset=19)  # AveragePool's dilations: opset 19
    with pytest.raises(OnnxError, match=r"node 'avg' \(AveragePool\): dilations \[2, 2\] are not supported"):
        mg.onnx.load(path)
