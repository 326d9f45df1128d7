"""Speed of graph drawing, and the per-op cost of recording which nn.Module made each op.

1. DOT source for a 10,000-op elementwise chain (``tanh`` applied 10,000 times to a 4-element tensor: 10,001
   tensors + 10,000 ops), with the default ``max_nodes=500`` (the rest collapsed into one note) and with
   ``max_nodes=None`` (all 20,001 nodes drawn). Target: under a second. Also the seed CNN rendered through
   ``dot`` to SVG and PNG, for scale.
2. Scope recording. Every op stores the tuple of running Modules so that viz can draw module clusters.
   Measured per op: a bare op with no Module running, the same op recorded while a Module's forward runs,
   and a Module call whose forward is that one op (the cost of ``Module.__call__`` pushing and popping the
   scope). Plus the seed CNN's forward at batch 1: ``model(x)`` vs each layer's ``forward`` called directly
   vs bare F calls.

Each figure is the median of ``--repeats`` (default 5) repeats; the sides of a comparison are interleaved so
that noise on a shared machine hits them all. Pure Python dominates these, so thread counts do not matter.

    python benchmarks/bench_viz.py
    python benchmarks/bench_viz.py --repeats 9 --chain 20000
    python benchmarks/bench_viz.py --quick      # a smoke test: tiny sizes, the figures mean nothing
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _timing import machine_info, time_in_turn

import microgradcnn as mg
from microgradcnn import functional as F
from microgradcnn import models, nn
from microgradcnn.tensor import scope
from microgradcnn.viz import draw_graph


def bench_chain(n_ops: int, repeats: int) -> None:
    """The DOT source of an ``n_ops``-op tanh chain, with the default ``max_nodes`` and with no limit."""
    x = mg.Tensor(np.linspace(-1.0, 1.0, 4, dtype=np.float32), requires_grad=True)
    start = time.perf_counter()
    y = x
    for _ in range(n_ops):
        y = y.tanh()
    build = time.perf_counter() - start
    print(f"{n_ops:,}-op tanh chain (built in {build * 1e3:.0f} ms), draw_graph(y, max_nodes=...).source:")
    limits = {str(m): (lambda m=m: draw_graph(y, max_nodes=m).source) for m in (500, None)}
    for name, t in time_in_turn(limits, repeats).items():
        g = draw_graph(y, max_nodes=None if name == "None" else int(name))
        print(
            f"  max_nodes={name:>4}: {t * 1e3:7.1f} ms  ({g.drawn_nodes:,} nodes drawn, "
            f"{g.omitted_nodes:,} collapsed, {len(g.source) / 1e6:.2f} MB of DOT)  "
            f"{'OK' if t < 1.0 else 'SLOWER THAN 1 s'}"
        )


def bench_render(repeats: int) -> None:
    """The seed CNN's graph with gradients: the DOT source, then through ``dot`` to SVG and PNG."""
    model = models.seed_cnn(rng=np.random.default_rng(0))
    x = mg.Tensor(np.random.default_rng(1).random((8, 1, 28, 28), dtype=np.float32) - 0.5)
    loss = F.cross_entropy(model(x), np.arange(8) % 10)
    loss.backward()
    g = draw_graph(loss, params=model, show_grad=True)
    source = time_in_turn({"dot": lambda: draw_graph(loss, params=model, show_grad=True).source}, repeats, 20)
    piped = time_in_turn({fmt: lambda f=fmt: g.pipe(format=f) for fmt in ("svg", "png")}, repeats)
    print(
        f"seed CNN ({g.drawn_nodes} nodes): DOT source {source['dot'] * 1e3:.2f} ms, dot -> svg "
        f"{piped['svg'] * 1e3:.0f} ms, dot -> png {piped['png'] * 1e3:.0f} ms"
    )


def bench_scope(repeats: int, calls: int) -> None:
    """What recording the module scope costs per op, and what a Module call costs."""
    a = mg.Tensor(np.ones(4, np.float32), requires_grad=True)
    b = mg.Tensor(np.ones(4, np.float32), requires_grad=True)
    relu = nn.ReLU()

    def ops() -> None:
        for _ in range(calls):
            F.add(a, b)

    def ops_in_scope() -> None:  # the same ops recorded while a Module runs: a non-empty scope is stored
        with scope(relu):
            ops()

    per_op = {k: v / calls for k, v in time_in_turn({"bare": ops, "scope": ops_in_scope}, repeats).items()}
    t_bare, t_scoped = per_op["bare"], per_op["scope"]
    print(f"per op (add of two 4-element tensors that require grad), median of {repeats} x {calls:,} calls:")
    print(f"  bare op, no Module running        {t_bare * 1e6:6.2f} µs")
    print(
        f"  same op inside a Module's scope   {t_scoped * 1e6:6.2f} µs  "
        f"(recording the scope: {(t_scoped - t_bare) * 1e6:+.2f} µs, {(t_scoped / t_bare - 1) * 100:+.1f} %)"
    )
    call = time_in_turn({"module": lambda: relu(a), "bare": lambda: F.relu(a)}, repeats, calls)
    print(f"  F.relu(x)                         {call['bare'] * 1e6:6.2f} µs")
    print(
        f"  nn.ReLU()(x) (Module call)        {call['module'] * 1e6:6.2f} µs  "
        f"(Module.__call__: {(call['module'] - call['bare']) * 1e6:+.2f} µs)"
    )

    model = models.seed_cnn(rng=np.random.default_rng(0))
    conv, pool, flat, fc = model
    x = mg.Tensor(np.random.default_rng(1).random((1, 1, 28, 28), dtype=np.float32) - 0.5)

    def forwards() -> None:  # each layer's forward called directly: no Module.__call__, no scope
        fc.forward(flat.forward(pool.forward(conv.forward(x))))

    def functional() -> None:
        F.linear(F.max_pool2d(F.conv2d(x, conv.weight, conv.bias), 2).flatten(1), fc.weight, fc.bias)

    fwd = time_in_turn(
        {"modules": lambda: model(x), "forwards": forwards, "functional": functional},
        repeats,
        max(1, calls // 20),
    )
    per_call = (fwd["modules"] - fwd["forwards"]) / 5  # Sequential + its 4 layers
    share = fwd["modules"] / fwd["forwards"] - 1
    print("seed CNN forward, batch 1:")
    print(f"  model(x)                          {fwd['modules'] * 1e6:6.1f} µs")
    print(
        f"  each layer's forward() directly   {fwd['forwards'] * 1e6:6.1f} µs  "
        f"(Module.__call__: ~{per_call * 1e6:.1f} µs per module, {share * 100:+.1f} % of the forward)"
    )
    print(f"  bare F calls, no layers           {fwd['functional'] * 1e6:6.1f} µs")


def main(argv: list[str] | None = None) -> None:
    """Entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="repeats per figure (median reported)")
    parser.add_argument("--chain", type=int, default=10_000, help="ops in the elementwise chain")
    parser.add_argument("--calls", type=int, default=20_000, help="op calls per repeat (scope benchmark)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.chain, args.calls = 1, 600, 400
    info = machine_info()
    print(f"# {info['cpu_model']}, {info['cpus']} CPUs, load {info['loadavg'][0]:.2f}, {info['date']}")
    bench_chain(args.chain, args.repeats)
    bench_render(args.repeats)
    bench_scope(args.repeats, args.calls)


if __name__ == "__main__":
    main()
