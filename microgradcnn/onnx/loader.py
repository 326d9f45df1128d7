"""``load``: an ONNX file, read as untrusted input, as a Module whose forward runs registry ops.

The file is parsed by protobuf only (no pickle, no code from the file runs), its size and every tensor's
bytes are bounded and checked against the tensor's dims, and external-data references may only name regular
files inside the model's own folder.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from microgradcnn.nn.module import Module, Parameter
from microgradcnn.onnx.registry import IMPORTERS, OnnxError, require_onnx
from microgradcnn.tensor import Tensor, no_grad

# ONNX TensorProto data types this loader reads: float data, the integer shapes/axes/indices, and boolean
# conditions (Where's; ONNX keeps bools in int32_data)
_DTYPES = {1: np.dtype(np.float32), 11: np.dtype(np.float64), 7: np.dtype(np.int64), 6: np.dtype(np.int32),
           9: np.dtype(np.bool_)}
_TYPED_FIELD = {1: "float_data", 11: "double_data", 7: "int64_data", 6: "int32_data", 9: "int32_data"}


@dataclass
class Node:
    """One ONNX node as the importers see it: attributes as plain Python values (tensors as arrays)."""

    name: str
    op_type: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    opset: int = 17


@dataclass
class _Input:
    name: str
    dtype: np.dtype[Any]
    dims: list[int | None] | None  # None per symbolic axis; None for no shape information at all


class _Holder(Module):
    """A plain container giving the parameters their dotted ``state_dict`` names (``"0.weight"``)."""

    def forward(self, *args: Any) -> Any:
        raise NotImplementedError("a parameter container has no forward")


class OnnxModel(Module):
    """A model read from an ONNX file: the graph's nodes run in order as registry ops, the float
    initializers are Parameters named as in the file (a dotted name like ``"0.weight"`` nests, so a model
    exported by microgradcnn or PyTorch gets its original ``state_dict`` names back).

    Shapes: as the file's graph input(s) and output(s); a symbolic axis (the batch) takes any size. Returns
    one Tensor, or a tuple for a graph of several outputs.
    """

    def __init__(self, source: str, nodes: list[Node], inputs: list[_Input], outputs: list[str],
                 params: dict[str, np.ndarray], constants: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.source = source
        self.nodes = nodes
        self.graph_inputs = inputs
        self.graph_outputs = outputs
        self.constants = constants
        self.initializer_params: dict[str, Parameter] = {}
        for name, array in params.items():
            self.initializer_params[name] = self._place(name, Parameter(array))

    def _place(self, name: str, param: Parameter) -> Parameter:
        owner: Module = self
        *path, leaf = name.split(".")
        if all([*path, leaf]) and not any(_reserved(p) for p in [*path, leaf]):
            try:
                for part in path:
                    child = owner._modules.get(part)
                    if child is None:
                        if part in owner.__dict__:
                            raise KeyError(part)
                        child = _Holder()
                        setattr(owner, part, child)
                    owner = child
                if leaf not in owner.__dict__:
                    setattr(owner, leaf, param)
                    return param
            except KeyError:
                pass
        # a name that cannot nest (clashes, empty parts): flat, with the dots replaced
        flat, k = name.replace(".", "_") or "param", 1
        while flat in self.__dict__:
            flat, k = f"{name.replace('.', '_')}_{k}", k + 1
        setattr(self, flat, param)
        return param

    def forward(self, *xs: Any) -> Any:
        """Run the graph on ``xs`` (one array or Tensor per graph input)."""
        if len(xs) != len(self.graph_inputs):
            names = [i.name for i in self.graph_inputs]
            raise OnnxError(f"{self.source}: the model takes {len(names)} input(s) {names}, got {len(xs)}")
        env: dict[str, Any] = dict(self.initializer_params)
        first = None
        for spec, x in zip(self.graph_inputs, xs, strict=True):
            t = x if isinstance(x, Tensor) else Tensor(x)
            _check_input(self.source, spec, t)
            env[spec.name] = t
            first = t if first is None else first
        dtype = first.dtype if first is not None else np.dtype(np.float32)
        for name, arr in self.constants.items():
            # float constants follow the input's dtype, so a float64 gradient check stays in float64
            env[name] = Tensor(arr.astype(dtype)) if arr.dtype.kind == "f" else arr
        for node in self.nodes:
            args = []
            for i in node.inputs:
                if i and i not in env:
                    raise OnnxError(f"{self.source}: node {node.name!r} ({node.op_type}) reads {i!r}, "
                                    "which no earlier node or initializer makes")
                args.append(env[i] if i else None)
            try:
                result = IMPORTERS[node.op_type](node, args)
            except OnnxError as err:
                raise OnnxError(f"{self.source}: node {node.name!r} ({node.op_type}): {err}") from None
            except (ValueError, TypeError, IndexError) as err:  # a registry op refusing its inputs
                raise OnnxError(f"{self.source}: node {node.name!r} ({node.op_type}): {err}") from None
            results = result if isinstance(result, tuple) else (result,)
            for name, value in zip(node.outputs, results, strict=False):
                if name:
                    env[name] = value
        for name in self.graph_outputs:
            if name not in env:
                raise OnnxError(f"{self.source}: graph output {name!r} is made by no node")
        outs = tuple(env[name] for name in self.graph_outputs)
        return outs[0] if len(outs) == 1 else outs

    def extra_repr(self) -> str:
        ops = sorted({n.op_type for n in self.nodes})
        return f"source={self.source!r}, nodes={len(self.nodes)}, ops={ops}"


def _reserved(part: str) -> bool:
    """A name an attribute of the model may not take (its own fields and methods)."""
    own = {"training", "source", "nodes", "constants", "graph_inputs", "graph_outputs", "initializer_params"}
    return part.startswith("_") or part in own or hasattr(OnnxModel, part)


def _check_input(source: str, spec: _Input, t: Tensor) -> None:
    if spec.dims is None:
        return
    dims = spec.dims
    if len(dims) != t.ndim or any(d is not None and d != s for d, s in zip(dims, t.shape, strict=True)):
        want = tuple("N" if d is None else d for d in spec.dims)
        raise OnnxError(f"{source}: input {spec.name!r} must have shape {want}, got {t.shape}")


def load(path: str | os.PathLike[str], *, max_bytes: int | None = None) -> OnnxModel:
    """Read the ONNX model at ``path`` as an ``OnnxModel`` (an ``nn.Module``).

    Its forward records ordinary registry ops, so the result can be drawn with ``mg.viz``, gradient-checked
    with ``mg.testing``, trained, and exported again. The file is untrusted input: it is parsed, never run;
    the file and each external-data file may hold at most ``max_bytes`` (default ``MAX_FILE_BYTES``);
    external data must be a file inside the model's folder. The graph is run once on zeros (a symbolic
    axis as 1) so a node that does not fit its inputs is reported now, not at the first real call.

    Raises:
        OnnxError: naming the file, for a missing, oversized, truncated or non-ONNX file, an unsafe or
            inconsistent tensor; naming the node and its op type, for an op with no importer
            (``IMPORTERS``) or a node whose inputs do not fit.
        ModuleNotFoundError: with the install command, when the onnx package is missing.
    """
    onnx = require_onnx()
    from google.protobuf.message import DecodeError

    from microgradcnn.onnx import MAX_FILE_BYTES

    limit = MAX_FILE_BYTES if max_bytes is None else int(max_bytes)
    where = os.fspath(path)
    file = Path(path)
    try:
        size = file.stat().st_size
        if not file.is_file():
            raise OnnxError(f"{where}: not a regular file")
        if size > limit:
            raise OnnxError(f"{where}: {size} bytes, more than the limit of {limit} (max_bytes)")
        data = file.read_bytes()
    except OSError as err:
        raise OnnxError(f"{where}: cannot read the file ({err.strerror or err})") from None
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except DecodeError as err:
        raise OnnxError(f"{where}: not an ONNX model, or a truncated one (protobuf: {err})") from None
    graph = proto.graph
    # Our own checks first, each with its own message, then onnx's checker for everything else.
    reader = _TensorReader(where, file.parent, limit)
    params: dict[str, np.ndarray] = {}
    constants: dict[str, np.ndarray] = {}
    for t in graph.initializer:
        reader.inline(t)
        arr = reader.array(t)
        # float arrays are weights; 0-d ones are constants of an expression (x * 2.0), as integer ones are
        (params if arr.dtype.kind == "f" and arr.ndim > 0 else constants)[t.name] = arr
    for k, n in enumerate(graph.node):
        if n.domain not in ("", "ai.onnx"):
            raise OnnxError(f"{where}: node {n.name or f'{n.op_type}_{k}'!r} has op type {n.op_type!r} of "
                            f"domain {n.domain!r}, which microgradcnn cannot import (ai.onnx ops only)")
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise OnnxError(f"{where}: not a valid ONNX model, or a truncated one ({first})") from None
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        raise OnnxError(f"{where}: imports no ai.onnx opset")

    known = set(params) | set(constants)
    inputs = [_input_spec(onnx, where, v) for v in graph.input if v.name not in known]
    nodes = []
    for k, n in enumerate(graph.node):
        name = n.name or f"{n.op_type}_{k}"
        if n.op_type not in IMPORTERS:
            raise OnnxError(f"{where}: node {name!r} has op type {n.op_type!r}, which microgradcnn cannot "
                            "import; register an importer with @microgradcnn.onnx.register_importer"
                            f"({n.op_type!r})")
        attrs = {a.name: _attribute(onnx, reader, where, name, a) for a in n.attribute}
        nodes.append(Node(name, n.op_type, list(n.input), list(n.output), attrs, opset))
    model = OnnxModel(where, nodes, inputs, [o.name for o in graph.output], params, constants)
    model.eval()
    if all(i.dims is not None for i in inputs):
        with no_grad():
            model(*(np.zeros([1 if d is None else d for d in i.dims], i.dtype) for i in inputs))
    return model


def _input_spec(onnx: Any, where: str, value: Any) -> _Input:
    ttype = value.type.tensor_type
    dtype = _DTYPES.get(ttype.elem_type)
    if dtype is None or dtype.kind != "f":
        kind = onnx.helper.tensor_dtype_to_string(ttype.elem_type) if ttype.elem_type else "non-tensor"
        raise OnnxError(f"{where}: input {value.name!r} is {kind}; microgradcnn reads float32/float64 inputs")
    if not ttype.HasField("shape"):
        return _Input(value.name, dtype, None)
    dims = [d.dim_value if d.HasField("dim_value") else None for d in ttype.shape.dim]
    return _Input(value.name, dtype, dims)


def _attribute(onnx: Any, reader: _TensorReader, where: str, node: str, attr: Any) -> Any:
    kind = attr.type
    a = onnx.AttributeProto
    if kind == a.TENSOR:
        reader.inline(attr.t)
        return reader.array(attr.t)
    if kind in (a.GRAPH, a.GRAPHS, a.SPARSE_TENSOR, a.SPARSE_TENSORS, a.TENSORS, a.TYPE_PROTO, a.TYPE_PROTOS):
        raise OnnxError(f"{where}: node {node!r}: attribute {attr.name!r} of type "
                        f"{a.AttributeType.Name(kind)} is not supported (no subgraphs or sparse tensors)")
    value = onnx.helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value]
    return value


class _TensorReader:
    """Turns TensorProtos into arrays after checking their type, dims and byte counts; pulls external data
    in from files inside ``folder`` only."""

    def __init__(self, where: str, folder: Path, limit: int) -> None:
        self.where, self.folder, self.limit = where, folder, limit
        self.external_bytes = 0

    def _expected(self, t: Any) -> tuple[np.dtype[Any], int]:
        dtype = _DTYPES.get(t.data_type)
        if dtype is None:
            raise OnnxError(f"{self.where}: tensor {t.name!r} has data type {t.data_type}; microgradcnn "
                            "reads float32, float64, int32, int64 and bool tensors")
        dims = list(t.dims)
        if any(d < 0 for d in dims):
            raise OnnxError(f"{self.where}: tensor {t.name!r} has negative dims {dims}")
        count = math.prod(dims)
        if count * dtype.itemsize > self.limit:
            raise OnnxError(f"{self.where}: tensor {t.name!r} of dims {dims} would need "
                            f"{count * dtype.itemsize} bytes, more than the limit of {self.limit}")
        return dtype, count

    def inline(self, t: Any) -> None:
        """Replace an external-data reference of ``t`` by the bytes it names, after the safety checks."""
        if t.data_location != 1:  # TensorProto.EXTERNAL
            return
        dtype, count = self._expected(t)
        info = {e.key: e.value for e in t.external_data}
        location = info.get("location", "")
        what = f"{self.where}: tensor {t.name!r} has external data {location!r}"
        parts_posix, parts_win = PurePosixPath(location), PureWindowsPath(location)
        if (not location or parts_posix.is_absolute() or parts_win.is_absolute() or parts_win.drive
                or ".." in parts_posix.parts or ".." in parts_win.parts):
            raise OnnxError(f"{what}: external data must be a relative path inside the model's folder")
        base = self.folder.resolve()
        target = (self.folder / location).resolve()
        if not target.is_relative_to(base):
            raise OnnxError(f"{what}, which leads outside the model's folder {base} (a symlink?)")
        if not target.is_file():
            raise OnnxError(f"{what}, which is not a file in {base}")
        try:
            offset = int(info.get("offset", "0"))
            length = int(info["length"]) if "length" in info else None
        except ValueError:
            raise OnnxError(f"{what} with a non-integer offset or length") from None
        need = count * dtype.itemsize
        size = target.stat().st_size
        if length is None:
            length = need
        if offset < 0 or length != need or offset + length > size:
            raise OnnxError(f"{what}: offset {offset} and length {length} do not fit its dims "
                            f"{list(t.dims)} ({need} bytes) in a file of {size} bytes")
        self.external_bytes += length
        if self.external_bytes > self.limit:
            raise OnnxError(f"{self.where}: external data of more than {self.limit} bytes (max_bytes)")
        with open(target, "rb") as f:
            f.seek(offset)
            t.raw_data = f.read(length)
        del t.external_data[:]
        t.data_location = 0

    def array(self, t: Any) -> np.ndarray:
        """``t`` as a NumPy array (a copy), after checking its byte count against its dims."""
        dtype, count = self._expected(t)
        if t.HasField("raw_data"):
            if len(t.raw_data) != count * dtype.itemsize:
                raise OnnxError(f"{self.where}: tensor {t.name!r} of dims {list(t.dims)} holds "
                                f"{len(t.raw_data)} bytes, want {count * dtype.itemsize}")
            arr = np.frombuffer(t.raw_data, dtype=dtype.newbyteorder("<")).astype(dtype)
        else:
            values = getattr(t, _TYPED_FIELD[t.data_type])
            if len(values) != count:
                raise OnnxError(f"{self.where}: tensor {t.name!r} of dims {list(t.dims)} holds "
                                f"{len(values)} values, want {count}")
            arr = np.asarray(values, dtype=dtype)
        return arr.reshape(tuple(t.dims))
