"""``export``: run a model once, walk the graph it recorded, write each op through its ONNX mapping."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from microgradcnn._checks import check_int
from microgradcnn._files import write_bytes_atomic
from microgradcnn.onnx.registry import EXPORTERS, OnnxError, require_onnx
from microgradcnn.tensor import Context, Tensor, enable_grad, toposort

BATCH = "batch"  # the symbolic name of the first axis of the input and output under dynamic_batch


class Graph:
    """The ONNX graph under construction, handed to every exporter (see ``register_exporter``)."""

    def __init__(self, onnx: Any, opset: int, dynamic_batch: bool, batch: int | None) -> None:
        self._onnx = onnx
        self.opset = opset
        self.dynamic_batch = dynamic_batch
        self.batch = batch  # the example's batch size (first axis), or None for a 0-d input
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._names: set[str] = set()
        self.scope = ""  # prefix of the node names: the module the current op ran in, as in state_dict

    def fresh(self, hint: str) -> str:
        """A name no tensor or node of the graph has yet, built from ``hint``."""
        name, k = hint, 1
        while name in self._names:
            name, k = f"{hint}_{k}", k + 1
        self._names.add(name)
        return name

    def reserve(self, name: str) -> str:
        self._names.add(name)
        return name

    def node(self, op_type: str, inputs: list[str], out: str | None = None, **attrs: Any) -> str:
        """Add a node of ``op_type`` reading ``inputs`` (``""`` for an omitted optional input); returns the
        name of its output (``out``, or a fresh one). Attributes are plain Python values."""
        out = out if out is not None else self.fresh(f"{op_type.lower()}_out")
        name = self.fresh(f"{self.scope}/{op_type}" if self.scope else op_type)
        self.nodes.append(self._onnx.helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out

    def constant(self, value: Any, hint: str = "const", dtype: Any = None, *, exact: bool = False) -> str:
        """Add ``value`` as an initializer (int64 for integer data unless ``dtype`` says otherwise); returns
        its name: ``hint``, made unique, or ``hint`` itself with ``exact`` (a reserved parameter name)."""
        arr = np.asarray(value, dtype=dtype)
        if dtype is None and arr.dtype.kind in "biu":
            arr = arr.astype(np.int64)
        name = hint if exact else self.fresh(hint)
        self.initializers.append(self._onnx.numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name


def export(
    model: Any,
    example_input: Any,
    path: str | os.PathLike[str],
    *,
    dynamic_batch: bool = True,
    opset: int | None = None,
    input_name: str = "input",
    output_name: str = "output",
) -> Path:
    """Write ``model`` as an ONNX file at ``path`` and return the path.

    ``model`` (an ``nn.Module`` or any callable of one Tensor) runs once on ``example_input`` (an array or
    Tensor, e.g. shape (1, 1, 28, 28)), in eval mode; the ops it records are mapped one by one through
    ``EXPORTERS`` and its parameters become initializers named by their ``state_dict`` names. With
    ``dynamic_batch`` the first axis of the input and the output is the symbolic ``"batch"``, so the file
    runs at any batch size. ``opset`` defaults to ``DEFAULT_OPSET``. The model is checked with
    ``onnx.checker.check_model(full_check=True)`` before the file is written, atomically.

    Raises:
        OnnxError: naming the op, for an op with no ONNX mapping (no file is written), or when the checker
            rejects the model.
        ModuleNotFoundError: with the install command, when the onnx package is missing.
    """
    onnx = require_onnx()
    from microgradcnn.onnx import DEFAULT_OPSET

    opset = DEFAULT_OPSET if opset is None else check_int(opset, "opset", "onnx.export", minimum=13)
    if opset > onnx.defs.onnx_opset_version():
        raise OnnxError(f"onnx.export: opset {opset} is newer than this onnx package knows "
                        f"({onnx.defs.onnx_opset_version()})")
    data = example_input.data if isinstance(example_input, Tensor) else np.asarray(example_input)
    if data.dtype not in (np.float32, np.float64):
        data = data.astype(np.float32)
    x = Tensor(data, requires_grad=True)  # so that every op on the input is recorded, even before a weight
    out = _run_in_eval_mode(model, x)
    if not isinstance(out, Tensor):
        raise OnnxError(f"onnx.export: the model must return one Tensor, got {type(out).__name__}")
    if out._ctx is None:
        raise OnnxError("onnx.export: the model's output does not depend on its input: nothing to export")

    names = _parameter_names(model)
    _refuse_input_dependent_constants(model, x, out, names)
    modules = _module_names(model)
    batch = data.shape[0] if data.ndim else None
    g = Graph(onnx, opset, dynamic_batch and batch is not None, batch)
    g.reserve(input_name)
    g.reserve(output_name)
    value: dict[Tensor, str] = {x: input_name}
    for name in names.values():
        g.reserve(name)
    # The engine's order: every op output needs grad here (the input does), so none is skipped.
    for t in toposort(out):
        ctx = t._ctx
        if ctx is None:  # the input or a parameter: named where an op reads it
            continue
        inputs = []
        for p in ctx.parents:
            if p not in value:  # a leaf: a parameter or a constant
                value[p] = g.constant(p.data, names[p], exact=True) if p in names else g.constant(p.data)
            inputs.append(value[p])
        exporter = EXPORTERS.get(ctx.fn.name)
        if exporter is None:
            raise OnnxError(
                f"onnx.export: op {ctx.fn.name!r} has no ONNX mapping; register one with "
                f"@microgradcnn.onnx.register_exporter({ctx.fn.name!r})"
            )
        target = output_name if t is out else g.fresh(ctx.fn.name)
        g.scope = _scope_name(ctx, modules)
        exporter(g, ctx, inputs, target)
        value[t] = target

    proto = _model_proto(onnx, g, data, out, input_name, output_name)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise OnnxError(f"onnx.export: the exported model does not check: {err}") from None
    return write_bytes_atomic(path, proto.SerializeToString())


def _recorded_constants(out: Tensor, x: Tensor, names: dict[Tensor, str]) -> list[tuple[str, list[Any]]]:
    """Per op recorded for ``out``, in the engine's order: its name and the values the file would store as
    constants: its leaf inputs other than ``x`` and the parameters, and its array attributes (``where``'s
    condition)."""
    ops = []
    for t in toposort(out):
        ctx = t._ctx
        if ctx is None:
            continue
        values = [p.data for p in ctx.parents if p._ctx is None and p is not x and p not in names]
        values += [v for v in ctx.attrs.values() if isinstance(v, np.ndarray)]
        ops.append((ctx.fn.name, values))
    return ops


def _refuse_input_dependent_constants(model: Any, x: Tensor, out: Tensor, names: dict[Tensor, str]) -> None:
    """Run ``model`` again on a second input of ``x``'s shape and raise ``OnnxError`` if the ops it records,
    or a constant one of them reads, differ from the first run's.

    A value computed from the input outside the graph (a comparison's boolean mask fed to ``where``, a
    statistic taken from ``x.data``) is recorded as a constant, and the file would replay the example's value
    for every input: a silently wrong model. The second input has the example's mean and spread.
    """
    data = x.data
    rng = np.random.default_rng(0)
    spread = float(data.std()) or 1.0
    other = (rng.standard_normal(data.shape) * spread + float(data.mean())).astype(data.dtype)
    other_x = Tensor(other, requires_grad=True)
    first = _recorded_constants(out, x, names)
    second = _recorded_constants(_run_in_eval_mode(model, other_x), other_x, names)
    if [op for op, _ in first] != [op for op, _ in second]:
        raise OnnxError(
            "onnx.export: the model records different ops for a different input (control flow that depends "
            "on the input's values); ONNX export replays one trace, so it cannot export this model"
        )
    for (op, a), (_, b) in zip(first, second, strict=True):
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            if u.shape != v.shape or not np.array_equal(u, v, equal_nan=u.dtype.kind == "f"):
                raise OnnxError(
                    f"onnx.export: op {op!r} reads a constant (#{i}, shape {u.shape}) computed from the "
                    "input's values outside the graph (e.g. a where-condition such as x.data > 0 or a "
                    "comparison of tensors); the file would fix it to the example's value for every input. "
                    "Compute it with recorded ops (e.g. F.relu, mg.maximum) instead"
                )


def _run_in_eval_mode(model: Any, x: Tensor) -> Any:
    """``model(x)``, recorded, with every module in eval mode (BatchNorm uses its running stats, Dropout is
    the identity, as the exported file will); each module's mode restored afterwards."""
    modules = list(model.modules()) if hasattr(model, "modules") else []
    modes = [m.training for m in modules]
    for m in modules:
        object.__setattr__(m, "training", False)
    try:
        with enable_grad():  # record the graph even when export is called inside no_grad
            return model(x)
    finally:
        for m, mode in zip(modules, modes, strict=True):
            object.__setattr__(m, "training", mode)


def _parameter_names(model: Any) -> dict[Tensor, str]:
    """Each parameter (and registered buffer) of ``model`` -> its ``state_dict`` name."""
    if not hasattr(model, "named_parameters"):
        return {}
    names: dict[Tensor, str] = {}
    for name, p in model.named_parameters():
        names.setdefault(p, name)
    for name, b in getattr(model, "named_buffers", lambda: [])():  # BatchNorm's running stats
        if isinstance(b, Tensor):
            names.setdefault(b, name)
    return names


def _module_names(model: Any) -> dict[int, str]:
    if not hasattr(model, "named_modules"):
        return {}
    return {id(m): name for name, m in model.named_modules()}


def _scope_name(ctx: Context, modules: dict[int, str]) -> str:
    """The ``state_dict``-style name of the innermost module the op ran in ("" for the top)."""
    for owner in reversed(ctx.scope):
        name = modules.get(id(owner))
        if name is not None:
            return name
    return ""


def _model_proto(
    onnx: Any, g: Graph, data: np.ndarray, out: Tensor, input_name: str, output_name: str
) -> Any:
    helper = onnx.helper

    def dims(shape: tuple[int, ...], batch_first: bool) -> list[Any]:
        return [BATCH if (i == 0 and batch_first) else s for i, s in enumerate(shape)]

    elem = helper.np_dtype_to_tensor_dtype
    out_batch = g.dynamic_batch and out.ndim > 0 and out.shape[0] == g.batch
    graph = helper.make_graph(
        g.nodes,
        "microgradcnn",
        [helper.make_tensor_value_info(input_name, elem(data.dtype), dims(data.shape, g.dynamic_batch))],
        [helper.make_tensor_value_info(output_name, elem(out.dtype), dims(out.shape, out_batch))],
        initializer=g.initializers,
    )
    from microgradcnn import __version__

    return helper.make_model(
        graph,
        producer_name="microgradcnn",
        producer_version=__version__,
        opset_imports=[helper.make_opsetid("", g.opset)],
        # The IR version of this opset, not the newest the onnx package knows: older runtimes refuse newer
        # IR versions even when they implement every op of the file.
        ir_version=_ir_version(onnx, g.opset),
    )


def _ir_version(onnx: Any, opset: int) -> int:
    for entry in onnx.helper.VERSION_TABLE:  # (release, ir version, ai.onnx opset, ...)
        if entry[2] >= opset:
            return int(entry[1])
    return int(onnx.IR_VERSION)
