"""Keep glibc's allocator from handing every large array back to the kernel (one process-wide setting).

With glibc's defaults every array of 128 KiB or more is mmap'd fresh and unmapped when freed, so each training
step page-faults and zeroes megabytes of new pages: the seed CNN's step ran ~2x slower at batch 16-256 for it
(docs/benchmarks.md). Raising the mmap and trim thresholds, as PyTorch's import does too, lets freed arrays be
reused. Set ``MICROGRADCNN_MALLOC=default`` before importing microgradcnn to keep glibc's defaults.
"""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt(3) parameter numbers from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 64 * 1024 * 1024  # arrays up to 64 MiB come from the heap and are reused once freed
TRIM_THRESHOLD = 128 * 1024 * 1024  # keep up to 128 MiB of freed heap instead of handing it back at once

tuned = False  # whether tune() changed the allocator in this process


def tune() -> bool:
    """Raise glibc malloc's mmap and trim thresholds, unless ``MICROGRADCNN_MALLOC=default`` is set.

    Returns True when the settings were applied (Linux with glibc only; a no-op elsewhere).
    """
    global tuned
    opted_out = os.environ.get("MICROGRADCNN_MALLOC", "").lower() == "default"
    if tuned or opted_out or not sys.platform.startswith("linux"):
        return tuned
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it; musl's mallopt ignores these anyway
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    tuned = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    tuned = bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and tuned
    return tuned
