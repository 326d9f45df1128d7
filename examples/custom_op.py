"""Add your own op: define swish with forward and backward, draw its graph, and prove its gradient.

Shows the three steps of docs/testing.md on a new op, swish(x) = x * sigmoid(x):
1. a ``Function`` subclass (defining it registers ``"swish"`` in ``mg.REGISTRY``) and its public function;
2. its computation graph, drawn with ``mg.viz.draw_graph`` into OUT_DIR as ``swish.dot`` (and ``swish.svg``
   when Graphviz's ``dot`` program is installed);
3. a hypothesis property test against central differences (``mg.testing.check_op``), and the same test
   catching a deliberately wrong backward.

Run: python examples/custom_op.py [OUT_DIR] [--quick]    (OUT_DIR defaults to a fresh temporary directory;
--quick, or MICROGRADCNN_EXAMPLE_QUICK=1, runs fewer hypothesis examples). Takes about 2 s.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import tempfile
import traceback

import numpy as np
from hypothesis import strategies as st

import microgradcnn as mg
from microgradcnn._files import write_bytes_atomic
from microgradcnn.tensor import Array, Context, Tensor
from microgradcnn.testing import GradcheckError, check_op, gradcheck, register_cases
from microgradcnn.testing.strategies import floats, shapes, tensors
from microgradcnn.viz import GraphvizNotFoundError, draw_graph


# ---- 1. the op: forward on arrays, backward returns one gradient per input ------------------------------
class SwishFn(mg.Function):
    """swish(x) = x * sigmoid(x). Backward: grad * (s + x * s * (1 - s)) with s = sigmoid(x)."""

    name = "swish"

    @staticmethod
    def forward(ctx: Context, x: Array) -> Array:
        # sigmoid via tanh: finite for any x, where 1 / (1 + exp(-x)) overflows for x < -709
        s = 0.5 * (1.0 + np.tanh(0.5 * x))
        ctx.save_for_backward(x, s)
        return x * s

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array]:
        x, s = ctx.saved_tensors
        return (grad * (s + x * s * (1.0 - s)),)


def swish(x: Tensor) -> Tensor:
    """Elementwise x * sigmoid(x) (PyTorch's ``silu``). Shapes: any -> the same."""
    return SwishFn.apply(x)


# Swish is smooth everywhere, so any finite values will do; [-4, 4] keeps both tails in play.
@register_cases("swish")
def swish_cases(max_side: int = 4) -> st.SearchStrategy[Tensor]:
    """Tensors of up to 3 axes; ``check_op`` feeds each to ``SwishFn.apply``."""
    return tensors(shapes(max_side=max_side), elements=floats(-4.0, 4.0))


# ---- a wrong backward, to see what a failure looks like ------------------------------------------------
class BrokenSwishFn(mg.Function, register=False):
    """swish whose backward forgot the sigmoid's derivative s * (1 - s): right shape, wrong values."""

    name = "broken_swish"
    forward = staticmethod(SwishFn.forward)  # the same forward; only the backward is wrong

    @staticmethod
    def backward(ctx: Context, grad: Array) -> tuple[Array]:
        _, s = ctx.saved_tensors
        return (grad * s,)


# ---- 2. its graph ------------------------------------------------------------------------------------
def draw(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Draw a one-neuron swish layer's graph after backward; write DOT, and SVG when ``dot`` is installed."""
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((4, 3)))
    w = Tensor(rng.standard_normal((3, 2)), requires_grad=True)
    loss = swish(x @ w).sum()
    loss.backward()
    graph = draw_graph(loss, params={"x": x, "w": w}, show_grad=True)
    written = [write_bytes_atomic(out_dir / "swish.dot", graph.source.encode())]
    try:
        written.append(write_bytes_atomic(out_dir / "swish.svg", graph.pipe(format="svg")))
    except GraphvizNotFoundError:
        print("Graphviz's `dot` is not installed: wrote the DOT text only (apt-get install graphviz)")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", help="where to write swish.dot/.svg (default: a temporary dir)")
    parser.add_argument("--quick", action="store_true", help="fewer hypothesis examples (as in CI)")
    args = parser.parse_args()
    quick = args.quick or os.environ.get("MICROGRADCNN_EXAMPLE_QUICK") == "1"
    out_dir = pathlib.Path(args.out_dir or tempfile.mkdtemp(prefix="microgradcnn_custom_op_"))
    out_dir.mkdir(parents=True, exist_ok=True)

    print("registered:", "swish" in mg.REGISTRY)
    for path in draw(out_dir):
        print("wrote", path)

    # ---- 3. its gradient: one fixed input, every element checked against central differences...
    x = Tensor(np.linspace(-3.0, 3.0, 6).reshape(2, 3), requires_grad=True)
    print("gradcheck(swish):", gradcheck(swish, [x]))
    # ...then a property test over drawn shapes and values: the op's registered cases, or any strategy.
    examples = 10 if quick else 100
    check_op("swish", max_examples=examples)
    print(f"check_op('swish'): {examples} drawn cases match central differences")

    try:
        check_op(BrokenSwishFn, max_examples=examples, cases=swish_cases())
    except GradcheckError as err:
        print("check_op(BrokenSwishFn) failed as it should:")
        print("".join(traceback.format_exception_only(err)).rstrip())  # the message, then hypothesis' example
    else:
        raise SystemExit("a wrong backward passed the check")


if __name__ == "__main__":
    main()
