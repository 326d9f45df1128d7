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
import statistics
import time
from collections.abc import Callable

import numpy as np
from _timing import machine_info, time_steps

import microgradcnn as mg
from microgradcnn import functional as F
from microgradcnn import models, nn
from microgradcnn.tensor import scope
from microgradcnn.viz import draw_graph


def median_seconds(fn: Callable[[], object], repeats: int, calls: int = 1) -> float:
    """Median over ``repeats`` of the seconds per call of ``fn`` (``calls`` calls per repeat)."""
    return statistics.median(time_steps(fn, calls) / calls for _ in range(repeats))


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, calls: int) -> dict[str, float]:
    """Median seconds per call of each fn, their repeats taken in turn (a, b, a, b, ...)."""
    for fn in fns.values():
        time_steps(fn, max(1, calls // 10))  # warm up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(time_steps(fn, calls) / calls)
    return {name: statistics.median(ts) for name, ts in times.items()}


def bench_chain(n_ops: int, repeats: int) -> None:
    x = mg.Tensor(np.linspace(-1.0, 1.0, 4, dtype=np.float32), requires_grad=True)
    start = time.perf_counter()
    y = x
    for _ in range(n_ops):
        y = y.tanh()
    build = time.perf_counter() - start
    print(f"{n_ops:,}-op tanh chain (built in {build * 1e3:.0f} ms), draw_graph(y, max_nodes=...).source:")
    for max_nodes in (500, None):
        g = draw_graph(y, max_nodes=max_nodes)
        t = median_seconds(lambda m=max_nodes: draw_graph(y, max_nodes=m).source, repeats)
        print(
            f"  max_nodes={max_nodes!s:>4}: {t * 1e3:7.1f} ms  ({g.drawn_nodes:,} nodes drawn, "
            f"{g.omitted_nodes:,} collapsed, {len(g.source) / 1e6:.2f} MB of DOT)  "
            f"{'OK' if t < 1.0 else 'SLOWER THAN 1 s'}"
        )


def bench_render(repeats: int) -> None:
    model = models.seed_cnn(rng=np.random.default_rng(0))
    x = mg.Tensor(np.random.default_rng(1).random((8, 1, 28, 28), dtype=np.float32) - 0.5)
    loss = F.cross_entropy(model(x), np.arange(8) % 10)
    loss.backward()
    g = draw_graph(loss, params=model, show_grad=True)
    source = median_seconds(lambda: draw_graph(loss, params=model, show_grad=True).source, repeats, calls=20)
    print(f"seed CNN ({g.drawn_nodes} nodes): DOT source {source * 1e3:.2f} ms", end="")
    for fmt in ("svg", "png"):
        print(
            f", dot -> {fmt} {median_seconds(lambda f=fmt: g.pipe(format=f), repeats) * 1e3:.0f} ms", end=""
        )
    print()


def bench_scope(repeats: int, calls: int) -> None:
    a = mg.Tensor(np.ones(4, np.float32), requires_grad=True)
    b = mg.Tensor(np.ones(4, np.float32), requires_grad=True)
    relu = nn.ReLU()

    def bare() -> None:
        F.add(a, b)

    def module_call() -> None:  # Module.__call__ -> scope push/pop -> forward -> one op
        relu(a)

    def bare_relu() -> None:
        F.relu(a)

    # The same op recorded while a Module runs (ctx.scope a non-empty tuple): the scope wraps the timed loop.
    def timed_in_scope(n: int) -> float:
        with scope(relu):
            return time_steps(bare, n)

    time_steps(bare, calls // 10)
    times: dict[str, list[float]] = {"bare": [], "in_scope": []}
    for _ in range(repeats):
        times["bare"].append(time_steps(bare, calls) / calls)
        times["in_scope"].append(timed_in_scope(calls) / calls)
    t_bare, t_scoped = (statistics.median(times[k]) for k in ("bare", "in_scope"))
    print(f"per op (add of two 4-element tensors that require grad), median of {repeats} x {calls:,} calls:")
    print(f"  bare op, no Module running        {t_bare * 1e6:6.2f} µs")
    print(
        f"  same op inside a Module's scope   {t_scoped * 1e6:6.2f} µs  "
        f"(recording the scope: {(t_scoped - t_bare) * 1e6:+.2f} µs, {(t_scoped / t_bare - 1) * 100:+.1f} %)"
    )
    calls_ = interleaved({"module": module_call, "bare": bare_relu}, repeats, calls)
    extra = calls_["module"] - calls_["bare"]
    print(f"  F.relu(x)                         {calls_['bare'] * 1e6:6.2f} µs")
    print(
        f"  nn.ReLU()(x) (Module call)        {calls_['module'] * 1e6:6.2f} µs  "
        f"(Module.__call__: {extra * 1e6:+.2f} µs)"
    )

    model = models.seed_cnn(rng=np.random.default_rng(0))
    conv, pool, flat, fc = model
    x = mg.Tensor(np.random.default_rng(1).random((1, 1, 28, 28), dtype=np.float32) - 0.5)

    def forwards() -> None:  # each layer's forward called directly: no Module.__call__, no scope
        fc.forward(flat.forward(pool.forward(conv.forward(x))))

    def functional() -> None:
        h = F.max_pool2d(F.conv2d(x, conv.weight, conv.bias), 2)
        F.linear(h.flatten(1), fc.weight, fc.bias)

    fwd = interleaved(
        {"modules": lambda: model(x), "forwards": forwards, "functional": functional}, repeats, calls // 20
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
    parser.add_argument(
        "--calls", type=int, default=20_000, help="op calls per repeat in the scope benchmark"
    )
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
