"""The ONNX mappings of the tensor ops (cat, stack, where, maximum, minimum, abs, sqrt, clip, shape ops,
logsumexp, var, std, min): an exported model using them all runs in ONNX Runtime with our numbers."""

import numpy as np
import pytest
from onnx_models import digits

import microgradcnn as mg
from microgradcnn import functional as F
from microgradcnn import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


class TensorOps(nn.Module):
    """Every tensor op once, batch-independent: (N, 1, 28, 28) -> (N, 8)."""

    def forward(self, x):
        h = x[:, 0, :4, :4]  # (N, 4, 4)
        joined = mg.cat([h, h.abs().sqrt()], axis=-1)  # (N, 4, 8)
        stacked = mg.stack([joined, joined.flip(-1)], axis=1).sum(axis=1)  # (N, 4, 8)
        chosen = mg.where(np.arange(8) % 2 == 0, stacked, stacked.clip(-0.2, None) + stacked.clip(None, 0.1))
        h = mg.maximum(chosen, 0.05) + mg.minimum(chosen, joined.clip(-0.3, 0.3))  # (N, 4, 8)
        h = F.pad(h, (1, -2, 0, 1), value=0.5)  # (N, 5, 7)
        h = h.unsqueeze(1).expand(-1, 2, 5, 7).permute(0, 2, 3, 1)  # (N, 5, 7, 2)
        stats = [h.logsumexp(axis=(1, 3)), h.var(axis=1, ddof=1).mean(axis=-1), h.std(axis=(1, 3)),
                 h.min(axis=1).max(axis=-1)]  # each (N, 7)
        return mg.cat(stats, axis=1)[:, :8]


@pytest.mark.parametrize("opset", [13, 17, 18])
def test_the_tensor_ops_export_and_match_onnxruntime(tmp_path, opset):
    model = TensorOps()
    path = mg.onnx.export(model, mg.Tensor(digits(1)), tmp_path / "m.onnx", opset=opset)
    types = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"Concat", "Unsqueeze", "Where", "Max", "Abs", "Sqrt", "Clip", "Expand", "Pad",
            "ReduceLogSumExp", "ReduceMean", "Slice"} <= types
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 5):
        x = digits(n, seed=n)
        with mg.no_grad():
            want = model(mg.Tensor(x)).data
        got = session.run(None, {session.get_inputs()[0].name: x})[0]
        np.testing.assert_allclose(got, want, atol=1e-5)
