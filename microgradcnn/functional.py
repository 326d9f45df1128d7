"""The public face of the ops: ``from microgradcnn import functional as F`` (re-exports only)."""

from microgradcnn.ops import *  # noqa: F403
from microgradcnn.ops import __all__  # noqa: F401
