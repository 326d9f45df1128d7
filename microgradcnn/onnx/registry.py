"""The two mapping tables (op name -> exporter, ONNX op type -> importer), their decorators, the error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Exporter = Callable[..., None]
Importer = Callable[..., Any]

EXPORTERS: dict[str, Exporter] = {}
"""Registry op name (``Function.name``) -> ``exporter(g, ctx, inputs, out)``; see ``register_exporter``."""

IMPORTERS: dict[str, Importer] = {}
"""ONNX op type (``"Conv"``) -> ``importer(node, inputs)``; see ``register_importer``."""

INSTALL = 'pip install -e ".[onnx]"  (or: pip install onnx onnxruntime)'


class OnnxError(ValueError):
    """An export or import that cannot be done: an op with no mapping, a bad or unsafe file, a node that does
    not fit its inputs. The message names the op, the file or the node."""


def register_exporter(op_name: str, *, replace: bool = False) -> Callable[[Exporter], Exporter]:
    """Decorator: register ``fn(g, ctx, inputs, out)`` as the ONNX mapping of the registry op ``op_name``.

    ``g`` is the graph being built (``g.node(op_type, inputs, out, **attributes)`` adds a node and returns
    its output name, ``g.constant(array)`` adds an initializer and returns its name, ``g.fresh(hint)`` gives
    an unused name, ``g.opset`` the target opset, ``g.dynamic_batch``); ``ctx`` is the op's recorded
    ``Context`` (``ctx.attrs``, ``ctx.parents`` with their shapes); ``inputs`` the ONNX names of
    ``ctx.parents`` in order; ``out`` the name the op's result must get.

    Raises:
        ValueError: if ``op_name`` already has a mapping and ``replace`` is not set.
    """
    return _registrar(EXPORTERS, op_name, "exporter", replace)


def register_importer(op_type: str, *, replace: bool = False) -> Callable[[Importer], Importer]:
    """Decorator: register ``fn(node, inputs)`` as the importer of the ONNX op type ``op_type``.

    ``node`` is a ``microgradcnn.onnx.loader.Node`` (``node.name``, ``node.op_type``, ``node.attrs`` as plain
    Python values, ``node.opset``); ``inputs`` the values of its inputs in order (a ``Tensor`` for float data,
    a NumPy integer array for shapes and indices, ``None`` for an omitted optional input). It returns the
    output value, or a tuple of them, computed with registry ops so the loaded model records a graph.

    Raises:
        ValueError: if ``op_type`` already has an importer and ``replace`` is not set.
    """
    return _registrar(IMPORTERS, op_type, "importer", replace)


def _registrar(table: dict[str, Any], key: str, what: str, replace: bool) -> Callable[[Any], Any]:
    if not isinstance(key, str) or not key:
        raise TypeError(f"register_{what}: the name must be a non-empty string, got {key!r}")

    def add(fn: Any) -> Any:
        taken = table.get(key)
        if taken is not None and not replace and taken.__qualname__ != fn.__qualname__:
            msg = f"register_{what}: {key!r} already maps to {taken.__qualname__}; pass replace=True"
            raise ValueError(msg)
        table[key] = fn
        return fn

    return add


def require_onnx() -> Any:
    """The ``onnx`` package, or a ModuleNotFoundError saying how to install it."""
    try:
        import onnx
    except ModuleNotFoundError:
        raise ModuleNotFoundError(f"microgradcnn.onnx needs the onnx package: {INSTALL}") from None
    return onnx
