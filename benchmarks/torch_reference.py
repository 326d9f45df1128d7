"""PyTorch CPU reference for the training benchmark: the same CNNs, data and SGD, timed in their own process.

``bench_train.py`` runs this file as a subprocess (``--serve``) and never imports torch itself: importing
torch changes glibc malloc's behaviour for the whole process, which would flatter a NumPy library timed beside
it. Run on its own, it times every case and prints the images/s as JSON on stdout::

    python benchmarks/torch_reference.py --quick
    python benchmarks/torch_reference.py --threads 2 --batch-sizes 1,16,64,256

The models are the library's (``_timing.BENCH_MODELS``), converted layer for layer with their weights
(``torch_twin``). Training step, in train mode: ``zero_grad``, forward, ``F.cross_entropy`` (mean),
``backward``, ``SGD.step`` (lr 0.01, no momentum; PyTorch's default foreach implementation). Inference, in
eval mode: forward under ``torch.inference_mode()``, the fastest mode PyTorch offers (no autograd bookkeeping
at all). Threads: ``torch.set_num_threads(--threads)`` and the OMP/MKL/OpenBLAS variables, set before torch
loads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from _timing import (
    INPUT_SHAPES,
    LEARNING_RATE,
    build_model,
    ensure_thread_env,
    run_standalone,
    serve,
    standalone_cases,
    worker_args,
)

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
    """The benchmarked CNN ``model`` (a name in ``_timing.BENCH_MODELS``) as PyTorch runs it.

    The library builds it (weights from NumPy seed 0, as the library worker's), without touching this
    process's malloc settings (``MICROGRADCNN_MALLOC=default``: PyTorch keeps the allocator regime its own
    import set), and ``torch_twin`` converts it.
    """
    import numpy as np

    os.environ["MICROGRADCNN_MALLOC"] = "default"
    return torch_twin(build_model(model, np.random.default_rng(0)), torch)


def build_step(case: dict[str, Any]) -> Callable[[], object]:
    """One training step or one inference of ``case``'s model at its batch size, on fixed float32 data.

    Training runs the model in train mode (BatchNorm on batch statistics, Dropout on), inference in eval mode.
    """
    import torch
    import torch.nn.functional as F
    from numpy_reference import make_batch

    if case.get("impl", "torch") != "torch" or case["mode"] not in ("train", "infer"):
        raise ValueError(f"torch_reference: cannot run case {case!r}")
    torch.manual_seed(0)  # Dropout's masks
    net = build_net(case["model"], torch)
    x_np, y_np = make_batch(int(case["batch"]), INPUT_SHAPES[case["model"]])
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


def main(argv: list[str] | None = None) -> None:
    """Run as a benchmark worker (``--serve``) or time every case here and print JSON."""
    args = worker_args("PyTorch CPU reference of the benchmarked CNNs.", argv)
    ensure_thread_env(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    if args.serve:
        serve(build_step)
        return
    cases = standalone_cases("torch", ("seed",), ("train", "infer"), args.batch_sizes)
    if not args.no_large:
        cases += standalone_cases("torch", ("cifar",), ("train", "infer"), [64])
    print(json.dumps(run_standalone(build_step, cases, args.repeats, args.min_time, args.warmup), indent=1))


if __name__ == "__main__":
    main()
