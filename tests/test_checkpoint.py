import json
import os
import pickle
import zipfile

import numpy as np
import pytest

from microgradcnn import checkpoint as ck
from microgradcnn import optim
from microgradcnn.models import seed_cnn, small_cnn
from microgradcnn.tensor import Tensor


def trained_pair(seed=0):
    """A seed CNN and an Adam optimizer after one step, so the optimizer has state."""
    from microgradcnn import functional as F

    model = seed_cnn(rng=np.random.default_rng(seed))
    opt = optim.Adam(model.parameters(), lr=1e-3)
    x = np.random.default_rng(1).standard_normal((4, 1, 28, 28)).astype(np.float32)
    loss = F.cross_entropy(model(Tensor(x)), [0, 1, 2, 3])
    loss.backward()
    opt.step()
    return model, opt


def write_npz(path, **arrays):
    with open(path, "wb") as f:  # a file object: np.savez would add ".npz" to a name
        np.savez(f, **arrays)


def write_npy(path, array):
    with open(path, "wb") as f:
        np.save(f, array)


def save(path, model=None, opt=None, **meta):
    if model is None:
        model, opt = trained_pair()
    return ck.save_checkpoint(path, model, opt, **meta)


def test_round_trip_restores_weights_optimizer_and_metadata(tmp_path):
    model, opt = trained_pair()
    rng = np.random.default_rng(5)
    rng.random(3)
    history = [{"epoch": 1, "test_accuracy": 0.5}]
    path = ck.save_checkpoint(
        tmp_path / "run.npz",
        model,
        opt,
        epoch=3,
        config={"model": "seed", "lr": 0.1},
        history=history,
        rng_state=rng.bit_generator.state,
    )
    loaded = ck.load_checkpoint(path)
    assert loaded.epoch == 3
    assert loaded.config == {"model": "seed", "lr": 0.1}
    assert loaded.history == history
    assert loaded.optimizer_type == "Adam"
    assert list(loaded.model_state) == list(model.state_dict())
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.model_state[name], value)
        assert loaded.model_state[name].dtype == np.float32
    restored_rng = np.random.default_rng()
    restored_rng.bit_generator.state = loaded.rng_state
    np.testing.assert_array_equal(restored_rng.random(4), rng.random(4))
    other = seed_cnn(rng=np.random.default_rng(9))
    opt2 = optim.Adam(other.parameters(), lr=1e-3)
    ck.restore_model(loaded, other)
    opt2.load_state_dict(loaded.optimizer_state)
    for p, q in zip(opt.state_dict()["state"].values(), opt2.state_dict()["state"].values(), strict=True):
        assert p["step"] == q["step"] == 1
        np.testing.assert_array_equal(p["exp_avg"], q["exp_avg"])
        np.testing.assert_array_equal(p["exp_avg_sq"], q["exp_avg_sq"])


def test_file_is_written_at_exactly_the_given_path(tmp_path):
    for name in ["model", "weights.ckpt", "a.npz"]:
        path = save(tmp_path / name)
        assert path == tmp_path / name
        assert path.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "model", "weights.ckpt"]


def test_parent_directories_are_created_and_file_mode_is_not_private(tmp_path):
    path = save(tmp_path / "runs" / "one" / "c.npz")
    assert path.is_file()
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "c.npz"
    save(path, epoch=1)
    before = path.read_bytes()

    def explode(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ck.write_atomic(path, explode)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]


def test_checkpoint_holds_only_plain_arrays_and_json(tmp_path):
    path = save(tmp_path / "c.npz", config={"model": "seed"})
    with np.load(path, allow_pickle=False) as npz:
        assert all(npz[name].dtype != object for name in npz.files)
        meta = json.loads(npz["meta"].tobytes())
        assert "model/0.weight" in npz.files
        assert "optimizer/0/exp_avg" in npz.files
    assert meta["format"] == ck.FORMAT
    assert meta["config"] == {"model": "seed"}


def test_pickle_bearing_files_are_refused(tmp_path):
    evil = tmp_path / "evil.npz"
    np.savez(evil, meta=np.array([{"run": "code"}], dtype=object))  # savez pickles object arrays
    with pytest.raises(ck.CheckpointError, match="refusing to load pickled data") as info:
        ck.load_checkpoint(evil)
    assert str(evil) in str(info.value)
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ck.CheckpointError, match=str(raw)):
        ck.load_checkpoint(raw)


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (
            lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
            "corrupt or truncated|not a valid",
        ),
        (lambda p: p.write_text("hello, not a zip"), "not a checkpoint"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: write_npy(p, np.zeros(3)), "single .npy array"),
        (lambda p: write_npz(p, weights=np.zeros(3)), "no 'meta'"),
        (lambda p: write_npz(p, meta=np.frombuffer(b"{not json", np.uint8)), "corrupt checkpoint metadata"),
        (lambda p: write_npz(p, meta=np.frombuffer(b'{"format": "x"}', np.uint8)), "not a microgradcnn"),
    ],
)
def test_corrupt_files_raise_checkpoint_errors_naming_the_file(tmp_path, corrupt, message):
    path = save(tmp_path / "c.npz")
    corrupt(path)
    with pytest.raises(ck.CheckpointError, match=message) as info:
        ck.load_checkpoint(path)
    assert str(path) in str(info.value)


def test_flipped_bytes_inside_the_archive_are_detected(tmp_path):
    path = save(tmp_path / "c.npz")
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("model/3.weight.npy")
    data = bytearray(path.read_bytes())
    data[info.header_offset + 200] ^= 0xFF  # inside the stored array: the CRC check must catch it
    path.write_bytes(bytes(data))
    with pytest.raises(ck.CheckpointError, match="corrupt"):
        ck.load_checkpoint(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.npz"):
        ck.load_checkpoint(tmp_path / "nope.npz")
    with pytest.raises(ck.CheckpointError, match="directory"):
        ck.load_checkpoint(tmp_path)


def test_newer_format_versions_are_refused(tmp_path):
    meta = json.dumps({"format": ck.FORMAT, "version": ck.VERSION + 1, "model_keys": []}).encode()
    path = tmp_path / "future.npz"
    write_npz(path, meta=np.frombuffer(meta, np.uint8))
    with pytest.raises(ck.CheckpointError, match="version"):
        ck.load_checkpoint(path)


def test_restore_model_builds_the_named_model(tmp_path):
    model, opt = trained_pair()
    path = ck.save_checkpoint(tmp_path / "c.npz", model, opt, config={"model": "seed"})
    restored = ck.restore_model(ck.load_checkpoint(path))
    assert not restored.training
    x = Tensor(np.random.default_rng(2).standard_normal((3, 1, 28, 28)).astype(np.float32))
    np.testing.assert_array_equal(restored(x).data, model(x).data)


def test_restore_model_rejects_another_models_weights(tmp_path):
    path = ck.save_checkpoint(
        tmp_path / "c.npz", small_cnn(rng=np.random.default_rng(0)), config={"model": "seed"}
    )
    with pytest.raises(
        ck.CheckpointError, match=r"c.npz: does not fit Sequential.*size mismatch for 0.weight"
    ):
        ck.restore_model(ck.load_checkpoint(path))


def test_restore_model_needs_a_known_model_name(tmp_path):
    path = save(tmp_path / "c.npz", config={})
    with pytest.raises(ck.CheckpointError, match="names model None"):
        ck.restore_model(ck.load_checkpoint(path))


def test_metadata_must_be_json(tmp_path):
    model, opt = trained_pair()
    with pytest.raises(TypeError, match="JSON"):
        ck.save_checkpoint(tmp_path / "c.npz", model, opt, config={"f": object()})
    ck.save_checkpoint(tmp_path / "c.npz", model, config={"n": np.int64(3), "a": np.arange(2)})
    assert ck.load_checkpoint(tmp_path / "c.npz").config == {"n": 3, "a": [0, 1]}


def rewrite(path, drop=(), **meta_changes):
    """Rewrite the checkpoint at ``path`` as a hostile editor would: members removed, metadata edited."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files if not k.startswith(tuple(drop))}
    meta = json.loads(arrays["meta"].tobytes())
    meta.update(meta_changes)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    write_npz(path, **arrays)


@pytest.mark.parametrize("epoch", [-5, 1.5, True, "3"])
def test_a_crafted_epoch_is_refused_naming_the_file(tmp_path, epoch):
    path = save(tmp_path / "c.npz", epoch=2)
    rewrite(path, epoch=epoch)
    with pytest.raises(ck.CheckpointError, match="epoch") as info:
        ck.load_checkpoint(path)
    assert str(path) in str(info.value)


def test_removed_optimizer_arrays_are_refused_naming_the_file(tmp_path):
    path = save(tmp_path / "c.npz", epoch=1)  # Adam after one step: step, exp_avg, exp_avg_sq per parameter
    rewrite(path, drop=["optimizer/"])
    with pytest.raises(ck.CheckpointError, match="optimizer arrays") as info:
        ck.load_checkpoint(path)
    assert str(path) in str(info.value)
    assert "optimizer/0/exp_avg" in str(info.value)  # says which ones are missing


def test_non_finite_weights_are_refused(tmp_path):
    model, opt = trained_pair()
    next(iter(model.parameters())).data.flat[0] = np.nan
    path = ck.save_checkpoint(tmp_path / "nan.npz", model, opt)
    with pytest.raises(ck.CheckpointError, match="NaN or inf") as info:
        ck.load_checkpoint(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"hello, a text file", "not a checkpoint"),
        (b"\x89PNG\r\n\x1a\n" + bytes(40), "not a checkpoint"),
    ],
)
def test_a_file_that_is_not_a_checkpoint_is_reported_as_such(tmp_path, content, message):
    path = tmp_path / "c.npz"
    path.write_bytes(content)
    with pytest.raises(ck.CheckpointError, match=message) as info:
        ck.load_checkpoint(path)
    assert "pickled" not in str(info.value)  # only a file that really holds pickled data is called that
    assert str(path) in str(info.value)


# ---- learning-rate scheduler state ----------------------------------------------------------------------
def scheduled_pair():
    """The trained pair with a OneCycleLR stepped 3 times: its state has floats, ints, strings and lists."""
    model, opt = trained_pair()
    schedule = optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=10)
    for _ in range(3):
        schedule.step()
    return model, opt, schedule


def test_the_scheduler_state_round_trips_through_the_json_metadata(tmp_path):
    model, opt, schedule = scheduled_pair()
    path = ck.save_checkpoint(tmp_path / "c.npz", model, opt, scheduler=schedule)
    with np.load(path, allow_pickle=False) as npz:  # no arrays of its own: all of it is in the metadata
        assert not [k for k in npz.files if "sched" in k]
        meta = json.loads(npz["meta"].tobytes())
    assert meta["scheduler"]["type"] == "OneCycleLR"
    loaded = ck.load_checkpoint(path)
    assert loaded.scheduler_type == "OneCycleLR"
    assert loaded.scheduler_state == schedule.state_dict()
    assert loaded.scheduler_state["last_epoch"] == 3
    # a scheduler built afresh continues from it exactly
    opt2 = optim.Adam(seed_cnn(rng=np.random.default_rng(3)).parameters(), lr=1e-3)
    opt2.load_state_dict(loaded.optimizer_state)
    fresh = optim.lr_scheduler.OneCycleLR(opt2, max_lr=0.01, total_steps=10)
    fresh.load_state_dict(loaded.scheduler_state)
    schedule.step()
    fresh.step()
    assert fresh.get_last_lr() == schedule.get_last_lr()
    assert opt2.param_groups[0]["betas"] == opt.param_groups[0]["betas"]


def test_a_checkpoint_without_a_scheduler_loads_as_no_scheduler(tmp_path):
    path = save(tmp_path / "c.npz")
    loaded = ck.load_checkpoint(path)
    assert (loaded.scheduler_type, loaded.scheduler_state) == (None, None)
    with np.load(path, allow_pickle=False) as npz:  # as written before schedulers were stored: no key
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays["meta"].tobytes())
    del meta["scheduler"]
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    write_npz(path, **arrays)
    loaded = ck.load_checkpoint(path)
    assert (loaded.scheduler_type, loaded.scheduler_state) == (None, None)


@pytest.mark.parametrize("entry", [["StepLR"], {"type": "StepLR"}, {"type": 3, "state": {}}, "cosine"])
def test_malformed_scheduler_metadata_is_refused_naming_the_file(tmp_path, entry):
    path = save(tmp_path / "c.npz")
    rewrite(path, scheduler=entry)
    with pytest.raises(ck.CheckpointError, match="malformed scheduler metadata") as info:
        ck.load_checkpoint(path)
    assert str(path) in str(info.value)


def test_module_generator_states_round_trip_and_must_fit_the_model(tmp_path):
    from microgradcnn.models import bn_cnn

    model = bn_cnn(rng=np.random.default_rng(0))
    model[12].rng.random(5)  # a state other than the spawned one
    ck.save_checkpoint(tmp_path / "g.npz", model)
    saved = ck.load_checkpoint(tmp_path / "g.npz")
    assert saved.module_rng_states == ck.module_rng_states(model)
    other = bn_cnn(rng=np.random.default_rng(1))
    ck.load_module_rng_states(other, saved.module_rng_states)
    assert np.array_equal(other[12].rng.random(4), model[12].rng.random(4))  # the same masks from here on
    assert ck.module_rng_states(seed_cnn(rng=np.random.default_rng(0))) == {}
    with pytest.raises(ValueError, match=r"missing for module\(s\) 12; unexpected for none"):
        ck.load_module_rng_states(other, {})
    with pytest.raises(ValueError, match=r"missing for module\(s\) none; unexpected for 3"):
        ck.load_module_rng_states(seed_cnn(), {"3": {}})
    with pytest.raises(ValueError, match="module '12' does not fit its generator"):
        ck.load_module_rng_states(other, {"12": {"bit_generator": "MT19937"}})


def test_malformed_generator_metadata_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "m.npz"
    ck.save_checkpoint(path, seed_cnn(rng=np.random.default_rng(0)))
    arrays = dict(np.load(path))
    meta = json.loads(arrays["meta"].tobytes())
    meta["module_rng_states"] = ["not", "a", "dict"]
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(ck.CheckpointError, match=r"m\.npz: malformed module_rng_states"):
        ck.load_checkpoint(path)
