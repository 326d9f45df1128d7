"""Training telemetry: what a network does while it learns, written to a run directory as it happens.

A ``Recorder`` is the callback ``train.fit`` calls: ``start`` once (after the model is built or resumed),
``on_step`` after every optimizer step, ``on_epoch`` after every evaluation, ``finish`` at the end. Module
hooks are the mechanism: on the steps it records (every ``every`` steps) the recorder registers a forward and
a full backward hook on every leaf module for exactly one step, so the other steps run without any hook.

The run directory holds::

    run.json            the run's description (layers, interval, config), written at start
    graph.svg           the model's graph (Graphviz, drawn while the first epoch trains), graph_nodes.json
                        the statistics of each node
    steps.jsonl         one record per recorded step: loss, accuracy, learning rate, per-layer statistics
    epochs.jsonl        one record per epoch: train/test loss and accuracy (as fit's history)
    epoch_0003.npz      conv filters and feature maps of a few fixed test digits after epoch 3
    final.json, final.npz   the confusion matrix and the most confidently wrong test images

Every record is appended as one complete line in a single ``write``, and whole files are written with
``write_atomic`` (without ``fsync``: telemetry is not worth milliseconds a file), so a Ctrl-C or a killed
process never leaves half a record; a reader (``read_records``) ignores a torn last line left by a crash
of the machine. Records are keyed by step: ``start(step=S)`` on a resumed run
drops every record beyond the checkpoint's step, so the files continue without duplicates.
"""

from __future__ import annotations

import io
import json
import math
import os
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from microgradcnn import nn
from microgradcnn._checks import check_int
from microgradcnn._files import write_bytes_atomic
from microgradcnn.nn.module import Module, RemovableHandle
from microgradcnn.tensor import Tensor, no_grad

DEFAULT_EVERY = 20
"""Steps between two recorded steps: at a batch of 64, ~4 records per epoch of mnist5k, ~47 of MNIST."""

STEPS, EPOCHS, RUN, FINAL = "steps.jsonl", "epochs.jsonl", "run.json", "final.json"


# ---- the files ----------------------------------------------------------------------------------------
def _clean(value: Any) -> Any:
    """JSON-safe: NaN and inf become None (JSON has no such numbers), NumPy scalars plain numbers."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _dumps(value: Any) -> str:
    """Compact JSON of ``value``, with NaN and inf as null and NumPy scalars as numbers (``_clean``)."""
    try:  # a record of plain finite numbers (the usual one) needs no walk through _clean
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):  # a NumPy scalar, a NaN or an inf somewhere
        return json.dumps(_clean(value), separators=(",", ":"))


def append_record(path: str | os.PathLike[str], record: Mapping[str, Any]) -> None:
    """Append ``record`` to the JSON-lines file ``path`` as one line, in one ``write``.

    A KeyboardInterrupt arrives between Python bytecodes, never inside the system call, so the line is
    either in the file or not, and once ``write`` returns the line is the kernel's: a killed process
    loses nothing. There is no ``fsync``: it cost milliseconds per record (more than a training step of
    the seed CNN) to guard against a crash of the machine, which can at worst lose or tear the last lines,
    and ``read_records`` drops a torn last line.
    """
    line = (_dumps(record) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        written = os.write(fd, line)
        if written != len(line):
            raise OSError(f"cannot append to {path}: wrote {written} of {len(line)} bytes (disk full?)")
    finally:
        os.close(fd)


def read_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a JSON-lines file, in order; a missing file has none.

    The last line is dropped if it is torn (no newline at its end, or not JSON): a run still being written,
    or one killed mid-write.

    Raises:
        ValueError: a line other than the last is not a JSON object (the file is damaged), naming the
            file and the line.
    """
    try:
        text = Path(path).read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    lines = text.split("\n")
    torn = lines.pop()  # "" when the file ends with a newline, else a partial record
    del torn
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            if number == len(lines):
                break  # a complete-looking but damaged last line: also a torn write
            raise ValueError(f"{path}: line {number} is not a JSON record: {line[:60]!r}")
        records.append(record)
    return records


def truncate_records(path: str | os.PathLike[str], key: str, last: int) -> None:
    """Keep the records of ``path`` whose ``key`` is at most ``last`` (and drop a torn line), atomically."""
    if not Path(path).exists():
        return
    kept = [r for r in read_records(path) if isinstance(r.get(key), int) and r[key] <= last]
    data = b"".join((_dumps(r) + "\n").encode() for r in kept)
    if data != Path(path).read_bytes():
        write_bytes_atomic(path, data)


def _write(path: Path, data: bytes) -> None:
    """Replace a telemetry file atomically, without ``fsync`` (the records are not fsynced either: a file
    survives Ctrl-C and a killed process, and a crash of the machine loses at most a few pictures)."""
    write_bytes_atomic(path, data, fsync=False)


def _npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # float16 already; compressing cost milliseconds an epoch to save ~10 %
    _write(path, buffer.getvalue())


def epoch_file(epoch: int) -> str:
    """The name of epoch ``epoch``'s snapshot (filters, feature maps) in a run directory."""
    return f"epoch_{epoch:04d}.npz"


# ---- statistics ---------------------------------------------------------------------------------------
def _norm(a: np.ndarray) -> float:
    """The 2-norm of an array of any shape, summed in float64 (float32 sums of large maps lose digits)."""
    a = np.asarray(a, dtype=np.float64)
    return float(np.sqrt(np.vdot(a, a)))


def _stats(a: np.ndarray) -> dict[str, float]:
    """mean, std and 2-norm of an array (float32 and float64 in their own precision, others in float64).

    One pass for the sum and one for the sum of squares (a BLAS dot), over the array in its memory order
    (the statistics do not depend on the order): a recorded step computes this for every layer's output
    and gradient, and a centred float64 copy took three to five times as long. ``E[x^2] - E[x]^2``
    cancels when the mean dwarfs the spread; then (``var < mean^2 / 1e3``) the variance is computed again
    from the centred values in float64, which is stable.
    """
    # Memory order: a view of the channels-last buffers behind the conv and pool outputs, not a copy.
    flat = np.ravel(a, order="K")
    if flat.dtype not in (np.float32, np.float64):  # float16 sums would overflow, ints need a float
        flat = flat.astype(np.float64)
    n = max(flat.size, 1)
    mean = float(np.einsum("i->", flat)) / n  # SIMD partial sums: 3x faster than flat.sum() here
    squares = float(np.dot(flat, flat))
    var = squares / n - mean * mean
    if var < mean * mean * 1e-3:
        d = flat.astype(np.float64) - mean
        var = float(np.dot(d, d)) / n
    return {"mean": mean, "std": math.sqrt(max(var, 0.0)), "norm": math.sqrt(squares)}


def dead_fraction(output: np.ndarray) -> float:
    """Fraction of units (every feature and position) that are zero for every sample of the batch.

    Shapes: ``output`` (N, ...) a ReLU's output; a unit is one of its ``prod(...)`` positions.
    """
    alive = (output.reshape(len(output), -1) > 0).any(axis=0)
    return float(1.0 - alive.mean()) if alive.size else 0.0


def _leaves(model: Module) -> list[tuple[str, Module]]:
    return [(name, m) for name, m in model.named_modules() if name and not m._modules]


def _as_input(images: np.ndarray) -> np.ndarray:
    from microgradcnn import data

    return data.preprocess(images) if images.dtype == np.uint8 else np.asarray(images, np.float32)


def fixed_digits(labels: np.ndarray, count: int = 4) -> np.ndarray:
    """Indices of ``count`` fixed test images: the first of each class 0, 1, 2, ... (then the first ones)."""
    labels = np.asarray(labels)
    picked = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)[:count]]
    picked += [i for i in range(len(labels)) if i not in picked][: count - len(picked)]
    return np.array(sorted(picked[:count]), dtype=np.int64)


def layer_outputs(model: Module, x: np.ndarray, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """What each leaf module of ``model`` outputs for the batch ``x``: ``{name: array}``, in forward order.

    One forward pass in eval mode without recording a graph (the model's train/eval mode is restored), with
    a forward hook on each leaf module named in ``names`` (default: every leaf; names as ``named_modules``
    gives them) removed afterwards. ``x`` is the model's input array, e.g. (N, 1, 28, 28) float32 for the
    seed CNN; uint8 images are preprocessed as the training data is. Outputs that are not tensors are left
    out.
    """
    leaves = dict(_leaves(model))
    wanted = list(leaves) if names is None else list(names)
    unknown = [n for n in wanted if n not in leaves]
    if unknown:
        raise KeyError(f"layer_outputs: no leaf module named {unknown} (the model has {list(leaves)})")
    outputs: dict[str, np.ndarray] = {}

    def keep(name: str) -> Any:
        def hook(module: Module, inputs: tuple[Any, ...], output: Any) -> None:
            if isinstance(output, Tensor):
                outputs[name] = output.data

        return hook

    handles = [leaves[n].register_forward_hook(keep(n)) for n in wanted]
    was_training = model.training
    try:
        model.eval()
        with no_grad():
            model(Tensor(_as_input(np.asarray(x))))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return outputs


# ---- the recorder -------------------------------------------------------------------------------------
class Recorder:
    """Records a training run into ``run_dir``: the callback ``train.fit`` calls (see the module docstring).

    Args:
        run_dir: the run directory (created).
        every: record every ``every`` steps (at least 1).
        digits: how many fixed test digits to keep feature maps of each epoch.
        max_maps: the most channels of one layer's feature maps kept per digit.
        worst: how many of the most confidently wrong test images to keep at the end.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        every: int = DEFAULT_EVERY,
        *,
        digits: int = 4,
        max_maps: int = 16,
        worst: int = 16,
    ) -> None:
        self.dir = Path(run_dir)
        self.every = check_int(every, "every", "Recorder", minimum=1)
        self.n_digits = check_int(digits, "digits", "Recorder", minimum=0)
        self.max_maps = check_int(max_maps, "max_maps", "Recorder", minimum=1)
        self.n_worst = check_int(worst, "worst", "Recorder", minimum=0)
        self.model: Module | None = None
        self.step = 0
        self.epoch = 0
        self._handles: list[RemovableHandle] = []
        self._layer: dict[str, dict[str, Any]] = {}
        self._before: dict[str, np.ndarray] = {}
        self._digits = np.zeros(0, np.int64)
        self._digit_x = np.zeros((0, 1, 28, 28), np.float32)
        self._graph: tuple[Any, bytes, Any] | None = None  # dot drawing graph.svg, the node statistics

    # ---- fit's calls ------------------------------------------------------------------------------------
    def start(
        self,
        model: Module,
        test_images: np.ndarray,
        test_labels: np.ndarray,
        *,
        step: int = 0,
        epoch: int = 0,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        """Begin (or, with ``step``/``epoch`` of a checkpoint, continue) recording ``model``'s training.

        Records beyond ``step`` / ``epoch`` (left by a run interrupted after its last checkpoint) and the
        final results of an earlier finish are removed, so a resumed run appends without duplicates. Writes
        run.json and the model graph (when Graphviz's ``dot`` is installed).
        """
        self.close()  # hooks left armed by a run interrupted mid-step
        self.model, self.step, self.epoch = model, check_int(step, "step", "Recorder.start", minimum=0), epoch
        self._layer, self._before = {}, {}
        self.dir.mkdir(parents=True, exist_ok=True)
        truncate_records(self.dir / STEPS, "step", self.step)
        truncate_records(self.dir / EPOCHS, "epoch", epoch)
        for old in self.dir.glob("epoch_*.npz"):
            if old.stem[6:].isdigit() and int(old.stem[6:]) > epoch:
                old.unlink()
        for name in (FINAL, "final.npz"):
            (self.dir / name).unlink(missing_ok=True)
        self._digits = fixed_digits(test_labels, self.n_digits) if self.n_digits else self._digits
        self._digit_x = _as_input(np.asarray(test_images)[self._digits])
        self._digit_y = np.asarray(test_labels)[self._digits]
        meta = {
            "format": 1,
            "every": self.every,
            "layers": [{"name": n, "type": type(m).__name__} for n, m in _leaves(model)],
            "params": [n for n, _ in model.named_parameters()],
            "config": dict(config or {}),
            "digits": self._digits.tolist(),
            "digit_labels": self._digit_y.tolist(),
        }
        _write(self.dir / RUN, json.dumps(_clean(meta), indent=1).encode())
        self._write_graph(model)
        self._arm_if_due(self.step + 1)

    def on_step(self, step: int, loss: float, accuracy: float, lr: float) -> None:
        """After optimizer step ``step`` (1-based, counted over the whole run) with its batch's metrics."""
        self.step = step
        if self._handles:
            self._remove_hooks()
            record: dict[str, Any] = {
                "step": step,
                "epoch": self.epoch,
                "loss": float(loss),
                "accuracy": float(accuracy),
                "lr": float(lr),
                "layers": self._layer,
                "params": self._param_stats(),
            }
            append_record(self.dir / STEPS, record)
            self._layer, self._before = {}, {}
        self._arm_if_due(step + 1)

    def on_epoch(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        """After epoch ``epoch`` (1-based) was evaluated: its metrics, the filters and the feature maps."""
        self.epoch = epoch
        assert self.model is not None, "Recorder.on_epoch before start"
        append_record(self.dir / EPOCHS, {**metrics, "epoch": epoch, "step": self.step})
        self._collect_graph()
        _npz(self.dir / epoch_file(epoch), self._snapshot(self.model))

    def finish(
        self,
        model: Module,
        test_images: np.ndarray,
        test_labels: np.ndarray,
        *,
        probabilities: np.ndarray | None = None,
    ) -> None:
        """At the end: the confusion matrix and the most confidently wrong test images.

        ``probabilities`` (N, classes), the model's ``predict_proba`` of the test images when the caller has
        them already (``train.fit`` from its last evaluation), saves a pass over the test set.
        """
        from microgradcnn.train import predict_proba  # train imports this module's callers: import late

        self.close()
        labels = np.asarray(test_labels, dtype=np.int64)
        if probabilities is None:
            probabilities = predict_proba(model, _as_input(np.asarray(test_images)))
        proba = np.asarray(probabilities)
        pred = proba.argmax(axis=1)
        n = max(10, int(labels.max(initial=0)) + 1, proba.shape[1])
        confusion = np.bincount(labels * n + pred, minlength=n * n).reshape(n, n)
        wrong = np.flatnonzero(pred != labels)
        wrong = wrong[np.argsort(-proba[wrong, pred[wrong]], kind="stable")][: self.n_worst]
        images = _as_input(np.asarray(test_images)[wrong])
        _npz(self.dir / "final.npz", {"worst_images": images.astype(np.float16)})
        final = {
            "step": self.step,
            "epoch": self.epoch,
            "confusion": confusion.tolist(),
            "worst": [
                {
                    "index": int(i),
                    "label": int(labels[i]),
                    "pred": int(pred[i]),
                    "confidence": float(proba[i, pred[i]]),
                    "p_label": float(proba[i, labels[i]]),
                }
                for i in wrong
            ],
        }
        _write(self.dir / FINAL, json.dumps(_clean(final)).encode())

    # ---- hooks ------------------------------------------------------------------------------------------
    def _arm_if_due(self, next_step: int) -> None:
        """Register the hooks for the coming step when it is one to record."""
        if self.model is None or next_step % self.every or self._handles:
            return
        for name, module in _leaves(self.model):
            self._handles.append(module.register_forward_hook(self._forward_hook(name)))
            self._handles.append(module.register_full_backward_hook(self._backward_hook(name)))

    def close(self) -> None:
        """Remove the recorder's hooks from the model and write the graph if ``dot`` is still drawing it
        (after a Ctrl-C; ``on_epoch``, ``finish`` and ``start`` do it too)."""
        self._remove_hooks()
        self._collect_graph()

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _forward_hook(self, name: str) -> Any:
        def hook(module: Module, inputs: tuple[Any, ...], output: Any) -> None:
            if not isinstance(output, Tensor) or not module.training:  # fit's evaluation between epochs
                return
            entry = self._layer.setdefault(name, {})
            entry["act"] = _stats(output.data)
            entry["shape"] = list(output.shape)
            if isinstance(module, nn.ReLU):
                entry["dead"] = dead_fraction(output.data)
            for pname, p in module.named_parameters(prefix=name):
                self._before[pname] = p.data.copy()  # the weights this step starts from

        return hook

    def _backward_hook(self, name: str) -> Any:
        def hook(module: Module, grad_input: Any, grad_output: Any) -> None:
            if grad_output and grad_output[0] is not None:
                self._layer.setdefault(name, {})["grad"] = _stats(grad_output[0])

        return hook

    def _param_stats(self) -> dict[str, dict[str, float]]:
        """Per parameter: its norm, its gradient's norm and the update-to-weight ratio of this step."""
        assert self.model is not None
        out = {}
        for name, p in self.model.named_parameters():
            entry = {"norm": _norm(p.data)}
            if p.grad is not None:
                entry["grad_norm"] = _norm(p.grad)
            before = self._before.get(name)
            if before is not None:  # ||w_after - w_before|| / ||w_before||, of this step
                entry["update_ratio"] = _norm(p.data.astype(np.float64) - before) / max(_norm(before), 1e-12)
            out[name] = entry
        return out

    # ---- pictures ---------------------------------------------------------------------------------------
    def _snapshot(self, model: Module) -> dict[str, np.ndarray]:
        """Conv filters and the fixed digits' feature maps (first ``max_maps`` channels), float16."""
        arrays: dict[str, np.ndarray] = {"digits": self._digit_x.astype(np.float16)}
        maps = layer_outputs(model, self._digit_x) if len(self._digit_x) else {}
        for name, m in _leaves(model):
            if isinstance(m, nn.Conv2d):
                arrays[f"filters/{name}"] = m.weight.data.astype(np.float16)
        for name, a in maps.items():
            if a.ndim == 4:
                arrays[f"maps/{name}"] = a[:, : self.max_maps].astype(np.float16)
        return arrays

    def _write_graph(self, model: Module) -> None:
        """Start drawing graph.svg: one batch of the fixed digits, with every node's value and gradient.

        The statistics are taken here, of the model as it starts; Graphviz's ``dot`` lays the graph out in
        its own process while training goes on (tens of milliseconds, several seed-CNN steps), and
        ``_collect_graph`` writes graph.svg and graph_nodes.json when the first epoch ends (or at
        ``close``).
        """
        import shutil
        import subprocess
        import tempfile

        from microgradcnn import functional as F
        from microgradcnn import viz
        from microgradcnn.checkpoint import load_module_rng_states, module_rng_states
        from microgradcnn.tensor import toposort

        if shutil.which("dot") is None or not len(self._digit_x):
            return
        params = [p for _, p in model.named_parameters()]
        saved = [p.grad for p in params]
        # This training-mode batch must leave no trace: BatchNorm's running statistics and a Dropout layer's
        # generator are put back, so a recorded run (and its resume) trains exactly as an unrecorded one.
        state, generators = model.state_dict(), module_rng_states(model)
        try:
            for p in params:
                p.grad = None
            loss = F.cross_entropy(model(Tensor(self._digit_x)), self._digit_y.astype(np.int64))
            for t in toposort(loss):
                t._retains_grad = t._ctx is not None  # keep every intermediate's gradient for the stats
            loss.backward()
            # the whole graph: with nodes left out the walk's ids would no longer be _node_stats's
            graph = viz.draw_graph(loss, params=model, show_grad=True, max_nodes=None)
            nodes = _node_stats(loss, dict(model.named_parameters()))
        finally:
            for p, g in zip(params, saved, strict=True):
                p.grad = g
            model.load_state_dict(state)
            load_module_rng_states(model, generators)
        with tempfile.TemporaryFile() as source:  # a file, not a pipe: dot reads it at its own pace
            source.write(graph.source.encode(graph.encoding or "utf-8"))
            source.seek(0)
            dot = subprocess.Popen(
                ["dot", "-Tsvg"], stdin=source, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        # a recorder dropped without close() must not leave dot's pipes open (or dot running) behind it
        self._graph = (dot, json.dumps(_clean(nodes)).encode(), weakref.finalize(self, _stop, dot))

    def _collect_graph(self) -> None:
        """Wait for the ``dot`` that ``_write_graph`` started and write its SVG with the node statistics.

        A ``dot`` killed by the Ctrl-C that stopped the run leaves no graph (a resumed run draws it again);
        one that fails is reported as a warning, not as an error that would stop the training.
        """
        if self._graph is None:
            return
        dot, nodes, finalizer = self._graph
        self._graph = None
        finalizer.detach()
        svg, err = dot.communicate()
        if dot.returncode == 0:
            _write(self.dir / "graph.svg", svg)
            _write(self.dir / "graph_nodes.json", nodes)
        elif dot.returncode > 0:
            import warnings

            message = err.decode(errors="replace").strip()
            warnings.warn(f"telemetry: dot could not draw {self.dir / 'graph.svg'}: {message}", stacklevel=2)


def _stop(process: Any) -> None:
    """End a child process and close its pipes (a ``weakref.finalize`` callback)."""
    if process.poll() is None:
        process.kill()
    process.communicate()


def _node_stats(loss: Tensor, params: Mapping[str, Tensor]) -> dict[str, dict[str, Any]]:
    """Statistics per graph node, keyed by ``draw_graph``'s node ids (``t0`` the root, then breadth first).

    The ids are assigned in the same breadth-first order as ``draw_graph``'s walk (roots, then each op's
    parents in order) when it draws every node (``max_nodes=None``); op nodes (``o0``...) get their op's
    name. ``tests/test_telemetry.py`` checks the ids against the rendered SVG's node labels.
    """
    names = {id(p): n for n, p in params.items()}
    node_of: dict[int, str] = {id(loss): "t0"}
    queue, out, n_ops = [loss], {}, 0
    while queue:
        t = queue.pop(0)
        entry: dict[str, Any] = {
            "kind": "tensor",
            "name": names.get(id(t), "loss" if t is loss else ""),
            "shape": list(t.shape),
            "dtype": str(t.dtype),
            "value": {**_stats(t.data), "min": float(t.data.min()), "max": float(t.data.max())},
        }
        if t.grad is not None:
            entry["grad"] = {**_stats(t.grad), "min": float(t.grad.min()), "max": float(t.grad.max())}
        out[node_of[id(t)]] = entry
        if t._ctx is None:
            continue
        out[f"o{n_ops}"] = {
            "kind": "op",
            "name": t._ctx.fn.name,
            "shape": list(t.shape),
            "dtype": str(t.dtype),
        }
        n_ops += 1
        for parent in t._ctx.parents:
            if id(parent) not in node_of:
                node_of[id(parent)] = f"t{len(node_of)}"
                queue.append(parent)
    return out
