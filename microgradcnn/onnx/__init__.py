"""ONNX export and import: ``mg.onnx.export(model, x, "model.onnx")`` and ``mg.onnx.load("model.onnx")``.

The ``onnx`` package is needed only when a model is written or read (``pip install -e ".[onnx]"``); the
registries work without it, so a user's op can register its mapping in any environment.

Each recorded op maps to ONNX through one entry of ``EXPORTERS`` (op name -> exporter), and each ONNX node
type back through one entry of ``IMPORTERS`` (op type -> importer); see ``register_exporter`` and
``register_importer``, and docs/interop.md.
"""

from microgradcnn.onnx.registry import (
    EXPORTERS,
    IMPORTERS,
    OnnxError,
    register_exporter,
    register_importer,
)

__all__ = [
    "DEFAULT_OPSET",
    "EXPORTERS",
    "IMPORTERS",
    "MAX_FILE_BYTES",
    "OnnxError",
    "OnnxModel",
    "export",
    "load",
    "register_exporter",
    "register_importer",
]

DEFAULT_OPSET = 17  # what torch.onnx.export writes by default, read by every ONNX Runtime since 1.12
MAX_FILE_BYTES = 1 << 31  # protobuf's own limit on one message; larger models keep weights as external data


# None of these import the onnx package at import time: export and load do, when called. The first two
# fill the registries with the built-in mappings.
from microgradcnn.onnx import exporters as _exporters  # noqa: E402, F401
from microgradcnn.onnx import importers as _importers  # noqa: E402, F401
from microgradcnn.onnx.exporter import export  # noqa: E402
from microgradcnn.onnx.loader import OnnxModel, load  # noqa: E402
