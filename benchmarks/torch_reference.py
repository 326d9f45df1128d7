"""The PyTorch and ONNX Runtime workers of ``bench_train.py``: the same CNNs and data, in their own processes.

``bench_train.py`` starts this file as two worker processes (``--worker torch``, ``--worker ort``) and never
imports torch itself: importing torch changes glibc malloc's behaviour for the whole process, which would
flatter a NumPy library timed beside it.

- ``torch``: the models are the library's (``_timing.build_model``), converted layer for layer with their
  weights (``torch_twin``). Training step, in train mode: ``zero_grad``, forward, ``F.cross_entropy`` (mean),
  ``backward``, ``SGD.step`` (lr 0.01, no momentum). Inference, in eval mode, under
  ``torch.inference_mode()``. ``torch.set_num_threads(--threads)``. The ``export`` request writes the twin,
  in eval mode, as an ONNX file (``torch.onnx.export(..., dynamo=False)``, the batch axis dynamic).
- ``ort``: ONNX Runtime (CPU provider, ``intra_op_num_threads = --threads``) running those files, inference
  only. This process never imports torch either.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

from _timing import BENCH_MODELS, LEARNING_RATE, build_model, common_parser, make_batch, parse_common, serve

# The constructor arguments of every layer the benchmarked models use, read off the library's layer: it keeps
# PyTorch's class and argument names, so ``torch.nn.<class>(**those)`` is the same layer. Conv2d and Linear
# also get ``bias=``.
_LAYER_ARGS = {
    "Conv2d": ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups"),
    "Linear": ("in_features", "out_features"),
    "MaxPool2d": ("kernel_size", "stride", "padding"),
    "AvgPool2d": ("kernel_size", "stride", "padding"),
    "BatchNorm1d": ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    "BatchNorm2d": ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    "Dropout": ("p",),
    "Flatten": ("start_dim", "end_dim"),
    "ReLU": (),
    "Tanh": (),
}


def torch_twin(net: Any, torch: Any) -> Any:
    """The ``torch.nn.Sequential`` computing what the microgradcnn ``Sequential`` ``net`` computes.

    Layer for layer the same classes and arguments, then ``net``'s state_dict (parameters and BatchNorm's
    running statistics) loaded in their dtype, so both start from the same weights. ValueError for a layer it
    cannot map.
    """
    layers = []
    for name, layer in net.named_children():
        kind = type(layer).__name__
        if kind not in _LAYER_ARGS:
            raise ValueError(f"torch_reference: no PyTorch twin for layer {name} ({kind})")
        kwargs = {arg: getattr(layer, arg) for arg in _LAYER_ARGS[kind]}
        if kind in ("Conv2d", "Linear"):
            kwargs["bias"] = layer.bias is not None
        layers.append(getattr(torch.nn, kind)(**kwargs))
    state = {k: torch.from_numpy(v.copy()) for k, v in net.state_dict().items()}
    twin = torch.nn.Sequential(*layers).to(next(t.dtype for t in state.values() if t.is_floating_point()))
    twin.load_state_dict(state)
    return twin


def build_net(model: str, torch: Any) -> Any:
    """The benchmarked CNN ``model`` as PyTorch runs it: the library builds it (weights from NumPy seed 0, as
    in the library's worker) without touching this process's malloc settings (``MICROGRADCNN_MALLOC=default``:
    PyTorch keeps the regime its own import set), and ``torch_twin`` converts it."""
    import numpy as np

    os.environ["MICROGRADCNN_MALLOC"] = "default"
    return torch_twin(build_model(model, np.random.default_rng(0)), torch)


def torch_step(case: dict[str, Any]) -> Callable[[], object]:
    """One training step or one inference of ``case``'s model at its batch size, on fixed float32 data."""
    import torch
    import torch.nn.functional as F

    if case["impl"] != "torch" or case["mode"] not in ("train", "infer"):
        raise ValueError(f"torch_reference: cannot run case {case!r}")
    torch.manual_seed(0)  # Dropout's masks
    net = build_net(case["model"], torch)
    x_np, y_np = make_batch(int(case["batch"]), BENCH_MODELS[case["model"]])
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    if case["mode"] == "infer":
        net.eval()

        def infer() -> object:
            with torch.inference_mode():
                return net(x)

        return infer
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=LEARNING_RATE)

    def train() -> None:
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()

    return train


def export_onnx(request: dict[str, Any], _step_of: Any) -> dict[str, Any]:
    """Write the PyTorch twin of ``request["model"]``, in eval mode, to the ONNX file ``request["path"]``."""
    import torch

    net = build_net(request["model"], torch).eval()
    x = torch.from_numpy(make_batch(2, BENCH_MODELS[request["model"]])[0])
    with warnings.catch_warnings():  # the legacy exporter (dynamo=False) is the one wanted: no warning
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net,
            (x,),
            request["path"],
            dynamo=False,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
        )
    return {"path": request["path"]}


def ort_step(case: dict[str, Any], threads: int) -> Callable[[], object]:
    """One ONNX Runtime inference of the file ``case["onnx"]`` at ``case``'s batch size."""
    import onnxruntime as ort

    if case["impl"] != "ort" or case["mode"] != "infer":
        raise ValueError(f"torch_reference: ONNX Runtime runs inference only, not {case!r}")
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(case["onnx"], options, providers=["CPUExecutionProvider"])
    feed = {"x": make_batch(int(case["batch"]), BENCH_MODELS[case["model"]])[0]}
    return lambda: session.run(None, feed)


def main(argv: list[str] | None = None) -> None:
    """Run as ``bench_train.py``'s ``torch`` or ``ort`` worker."""
    args = parse_common(common_parser(__doc__), argv)
    if args.worker == "torch":
        import torch

        torch.set_num_threads(args.threads)
        serve(torch_step, {"export": export_onnx})
    elif args.worker == "ort":
        import onnxruntime  # noqa: F401  (loaded before the first request, so "info" reports its version)

        def torch_free() -> None:
            assert "torch" not in sys.modules, (
                "torch_reference: torch was imported into the ONNX Runtime worker"
            )

        serve(lambda case: ort_step(case, args.threads), check=torch_free)
    else:
        raise SystemExit(
            "torch_reference.py is bench_train.py's worker: run python benchmarks/bench_train.py"
        )


if __name__ == "__main__":
    main()
