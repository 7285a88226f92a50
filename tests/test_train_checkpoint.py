import json
import random

import numpy as np
import pytest
import torch

from neuroplastic.train.checkpoint import load_checkpoint, rng_state, save_atomic, seed_everything, set_rng_state
from neuroplastic.train.records import JsonlLog, to_jsonable, write_snapshot


def test_failing_write_leaves_the_old_checkpoint_intact(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_atomic({"epoch": 1, "w": torch.arange(3.0)}, path)
    with pytest.raises(Exception, match="pickle|lambda"):
        save_atomic({"epoch": 2, "bad": lambda: None}, path)  # a lambda cannot be pickled
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 1 and torch.equal(ckpt["w"], torch.arange(3.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no temporary file left


def test_interrupted_write_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_atomic({"epoch": 1}, path)

    def die(*args, **kwargs):
        raise KeyboardInterrupt  # killed between writing the temporary file and moving it

    monkeypatch.setattr("neuroplastic.train.checkpoint.os.replace", die)
    with pytest.raises(KeyboardInterrupt):
        save_atomic({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1 and not (tmp_path / "checkpoint.pt.tmp").exists()


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nope.pt")


def test_rng_state_round_trip_restores_all_three_generators():
    seed_everything(5)
    state = rng_state()
    first = (random.random(), np.random.rand(), torch.rand(2))  # noqa: NPY002
    set_rng_state(state)
    again = (random.random(), np.random.rand(), torch.rand(2))  # noqa: NPY002
    assert first[0] == again[0] and first[1] == again[1] and torch.equal(first[2], again[2])
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        seed_everything(-1)


def test_jsonl_log_truncates_to_the_checkpointed_length(tmp_path):
    log = JsonlLog(tmp_path / "h.jsonl")
    for i in range(4):
        log.append({"epoch": i, "x": torch.tensor(0.5), "v": np.float32(1.5), "nan": float("nan")})
    assert log.read()[1] == {"epoch": 1, "x": 0.5, "v": 1.5, "nan": None}
    assert [r["epoch"] for r in log.truncate(2)] == [0, 1]
    assert [json.loads(s)["epoch"] for s in (tmp_path / "h.jsonl").read_text().splitlines()] == [0, 1]
    with pytest.raises(ValueError, match="has 2 records but the checkpoint expects 3"):
        log.truncate(3)
    with pytest.raises(TypeError, match="cannot write a object"):
        to_jsonable(object())


def test_snapshot_is_float16_and_keeps_integers(tmp_path):
    path = write_snapshot(tmp_path / "snapshots", 7, {"pi/a": torch.tensor([0.25, 1.0]), "count": np.arange(3)})
    assert path.name == "epoch_00007.npz"
    with np.load(path) as z:
        assert z["pi/a"].dtype == np.float16 and z["pi/a"].tolist() == [0.25, 1.0]
        assert z["count"].dtype.kind == "i"
    assert write_snapshot(tmp_path / "other", 0, {}) is None and not (tmp_path / "other").exists()
