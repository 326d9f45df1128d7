"""Draw computation graphs: a small expression, the seed CNN's training step, a NaN, a big graph.

Writes SVG and PNG pictures into OUT_DIR (default ``graphs/``); the pictures in docs/graphs.md are made with

    python examples/visualize_graph.py docs/img

Needs Graphviz's ``dot`` program (``apt-get install graphviz`` / ``brew install graphviz``). Takes ~2 s.
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np

import microgradcnn as mg
from microgradcnn import models
from microgradcnn.viz import draw_graph, write_model_graph


def small_expression() -> mg.viz.ComputationGraph:
    """One tanh neuron and its squared error, after backward: gradient norms on the leaves and on y."""
    rng = np.random.default_rng(0)
    x = mg.Tensor(rng.standard_normal((4, 3)))  # a batch of 4 inputs: data, no gradient
    w = mg.Tensor(rng.standard_normal((3, 1)), requires_grad=True)
    b = mg.Tensor(np.zeros(1), requires_grad=True)
    y = (x @ w + b).tanh().retain_grad()  # an intermediate keeps its .grad only when asked
    loss = ((y - 1.0) ** 2).mean()
    loss.backward()
    return draw_graph(loss, params={"x": x, "w": w, "b": b, "y": y}, show_grad=True)


def nan_graph() -> mg.viz.ComputationGraph:
    """log of a negative number: the op that made the NaN, and everything downstream, is drawn red."""
    x = mg.Tensor(np.array([2.0, -1.0, 0.5]), requires_grad=True)
    with np.errstate(invalid="ignore"):  # the NaN is the point here
        loss = (x.log() * 3.0).sum()
    return draw_graph(loss, params={"x": x})


def long_chain() -> mg.viz.ComputationGraph:
    """200 ops, drawn with max_nodes=12: the rest is one note saying how much was left out."""
    x = mg.Tensor(np.linspace(0.0, 1.0, 8), requires_grad=True)
    y = x
    for _ in range(100):
        y = (y * 0.9).tanh()
    return draw_graph(y.sum(), params={"x": x}, max_nodes=12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default="graphs", help="where to write the pictures")
    out = pathlib.Path(parser.parse_args().out_dir)
    out.mkdir(parents=True, exist_ok=True)
    graphs = {"expression": small_expression(), "nan": nan_graph(), "collapsed": long_chain()}
    for name, graph in graphs.items():
        for fmt in ("svg", "png"):
            path = out / f"{name}.{fmt}"
            path.write_bytes(graph.pipe(format=fmt))
            print(path)
    # The seed CNN's training step: one seeded batch of 8 MNIST-shaped images, cross-entropy, backward.
    for fmt in ("svg", "png"):
        model = models.seed_cnn(rng=np.random.default_rng(0))
        print(write_model_graph(model, out / f"seed_cnn.{fmt}", fmt=fmt, grad=True))


if __name__ == "__main__":
    main()
