import os
import stat

import pytest

from microgradcnn._files import write_atomic, write_bytes_atomic


def test_write_atomic_replaces_whole_file(tmp_path):
    path = tmp_path / "sub" / "out.bin"
    assert write_bytes_atomic(path, b"first") == path
    write_bytes_atomic(path, b"second")
    assert path.read_bytes() == b"second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.bin"]


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path, error):
    path = tmp_path / "out.bin"
    path.write_bytes(b"precious")

    def explode(f):
        f.write(b"half")
        raise error

    with pytest.raises(type(error)):
        write_atomic(path, explode)
    assert path.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_new_file_gets_a_plain_open_mode(tmp_path):
    mask = os.umask(0o022)
    try:
        path = write_bytes_atomic(tmp_path / "x", b"1")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_error_names_the_target(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("")
    with pytest.raises(OSError, match=r"afile/x\.npz") as info:
        write_bytes_atomic(blocker / "x.npz", b"1")
    assert info.value.filename == str(blocker / "x.npz")


def test_fsync_false_replaces_as_atomically_without_the_flush_to_disk(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    path = tmp_path / "log.bin"
    write_bytes_atomic(path, b"old", fsync=False)
    write_bytes_atomic(path, b"new", fsync=False)
    assert path.read_bytes() == b"new"
    assert synced == []
    assert [p.name for p in tmp_path.iterdir()] == ["log.bin"]  # no temporary file left
    write_bytes_atomic(path, b"durable")
    assert len(synced) == 1  # the default still flushes
