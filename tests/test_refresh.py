"""The refresh job's parts: the interactions log as data, warm starts, and a tiny
run of configs/ml100k_refresh.py through time (stale / refresh / scratch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import flax
import numpy as np
import pytest
from conftest import DATA_DIR, REPO_ROOT, subprocess_env

from rec_jax import errors, recipes
from rec_jax.data import dataset as dataset_lib
from rec_jax.spec import ModelSpec


def _log(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n"
                            for r in records))
    return str(path)


def test_interactions_log_is_appended_in_time_order(ml100k, tmp_path):
    path = _log(tmp_path / "log.jsonl", [
        {"user_id": "1", "item_id": "50", "rating": 4, "timestamp": 900_000_000},
        "",
        {"user_id": "943", "item_id": "1", "rating": None, "timestamp": 900_000_001}])
    d = dataset_lib.append_interactions(ml100k, path)
    assert d.num_interactions == ml100k.num_interactions + 2
    assert d.num_users == ml100k.num_users and d.num_items == ml100k.num_items
    last = d.timestamp == 900_000_001
    assert d.user_ids[d.user[last]].tolist() == ["943"] and d.rating[last].tolist() == [0.0]
    first = d.timestamp == 900_000_000
    assert d.item_ids[d.item[first]].tolist() == ["50"] and d.rating[first].tolist() == [4.0]
    # Still in the canonical (user, time, item) order.
    order = np.lexsort((d.item, d.timestamp, d.user))
    np.testing.assert_array_equal(order, np.arange(d.num_interactions))


@pytest.mark.parametrize("line,message", [
    ("{not json", "line 2: not JSON"),
    ('["1", "50"]', "line 2: expected an object"),
    ({"user_id": "99999", "item_id": "50", "timestamp": 1}, "line 2, field 'user_id': unknown"),
    ({"user_id": "1", "item_id": "x", "timestamp": 1}, "line 2, field 'item_id': unknown"),
    ({"user_id": "1", "item_id": "50", "rating": "5", "timestamp": 1},
     "line 2, field 'rating': not a number"),
    ({"user_id": "1", "item_id": "50"}, "line 2, field 'timestamp': not a unix time"),
])
def test_a_malformed_log_line_is_named(ml100k, tmp_path, line, message):
    path = _log(tmp_path / "log.jsonl", [
        {"user_id": "1", "item_id": "50", "timestamp": 5}, line])
    with pytest.raises(errors.DataError, match=message) as e:
        dataset_lib.append_interactions(ml100k, path)
    assert str(e.value).startswith(path)


def _spec(init):
    return ModelSpec(name="m", init=init, loss_fn=None, source=None, score_fn=None,
                     make_query=None)


def test_warm_start_loads_params_and_refuses_another_shape(tmp_path):
    trained = {"a": {"w": np.full((3, 2), 7.0, np.float32)}, "b": np.ones(4, np.float32)}
    path = tmp_path / "params.msgpack"
    path.write_bytes(flax.serialization.msgpack_serialize(trained))
    fresh = lambda rng: {"a": {"w": np.zeros((3, 2), np.float32)},  # noqa: E731
                         "b": np.zeros(4, np.float32)}
    got = recipes.warm_start(_spec(fresh), str(path), student_only=False).init(None)
    np.testing.assert_array_equal(got["a"]["w"], trained["a"]["w"])
    # A distilled student: its own params come from the file, the KD heads start fresh.
    kd = lambda rng: {"student": fresh(rng), "heads": np.zeros(5)}  # noqa: E731
    got = recipes.warm_start(_spec(kd), str(path), student_only=True).init(None)
    np.testing.assert_array_equal(got["student"]["b"], trained["b"])
    np.testing.assert_array_equal(got["heads"], np.zeros(5))
    wider = lambda rng: {"a": {"w": np.zeros((3, 4), np.float32)},  # noqa: E731
                         "b": np.zeros(4, np.float32)}
    with pytest.raises(errors.ConfigError, match=r"param \['a'\]\['w'\] is \(3, 2\) there "
                                                 r"but \(3, 4\)"):
        recipes.warm_start(_spec(wider), str(path), student_only=False).init(None)
    with pytest.raises(errors.MissingInputError, match="no such file"):
        recipes.warm_start(_spec(fresh), str(tmp_path / "none.msgpack"), False)


def test_refresh_warm_starts_the_teacher_and_the_student_from_the_previous_window():
    from configs import ml100k_refresh

    from rec_jax import refresh

    config = ml100k_refresh.get_config()
    c = refresh.window_config(config, 2, "refresh", "w/refresh/window_1")
    assert (c.data.split, c.data.window) == ("window", 2)
    assert c.teacher.train.init_from == os.path.join("w/refresh/window_1", "teacher",
                                                     "params.msgpack")
    assert c.model.mf.train.init_from == os.path.join("w/refresh/window_1", "mf_kd",
                                                      "params.msgpack")
    assert (c.teacher.train.epochs, c.model.mf.train.epochs) == (10.0, 20.0)
    assert c.teacher.train.patience == c.model.mf.train.patience == 3
    assert c.teacher.train.min_epochs == c.model.mf.train.min_epochs == 0.0
    for policy in ("stale", "scratch"):  # full budget, random init
        c = refresh.window_config(config, 2, policy, "w/x")
        assert c.teacher.train.init_from == c.model.mf.train.init_from == ""
        assert c.teacher.train.epochs == config.teacher.train.epochs
    config.models = "teacher,mf,mf_kd"
    with pytest.raises(errors.ConfigError, match="share a config section"):
        refresh.run(config, "unused")


@pytest.mark.slow
def test_refresh_job_tiny(tmp_path):
    """Two windows, three policies: window 0 trained once, then stale (window 0's
    checkpoints evaluated), refresh (warm-started) and scratch. MF alone keeps it
    short; the teacher's warm start is the same code (test above, recipes.warm_start)."""
    workdir = str(tmp_path / "refresh")
    cmd = [sys.executable, "-m", "rec_jax.main", "--config=configs/ml100k_refresh.py:tiny",
           f"--workdir={workdir}", "--config.progress=off", f"--config.data.data_dir={DATA_DIR}",
           "--config.models=mf"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=subprocess_env(1), capture_output=True,
                          text=True, timeout=900, check=False)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    with open(os.path.join(workdir, "refresh.json")) as f:
        rows = json.load(f)["rows"]
    assert [(r["window"], r["policy"]) for r in rows] == [
        (0, "stale"), (0, "refresh"), (0, "scratch"),
        (1, "stale"), (1, "refresh"), (1, "scratch")]
    by = {(r["window"], r["policy"]): r for r in rows}
    key = "mf/ndcg@10"
    assert by[0, "stale"][key] == by[0, "refresh"][key] == by[0, "scratch"][key]
    assert all(0.0 < r[key] <= 1.0 for r in rows)
    assert not os.path.exists(os.path.join(workdir, "stale", "window_0"))  # shared window 0
    # Stale evaluated window 0's checkpoint without training it again.
    with open(os.path.join(workdir, "stale", "window_1", "mf", "results.json")) as f:
        stale = json.load(f)
    with open(os.path.join(workdir, "scratch", "window_0", "mf", "results.json")) as f:
        first = json.load(f)
    assert stale["info"]["best_step"] == first["info"]["best_step"]
    # Refresh started from the previous window's model, with its own budget.
    with open(os.path.join(workdir, "refresh", "window_1", "run.json")) as f:
        config = json.load(f)["config"]
    assert config["model"]["mf"]["train"]["init_from"].endswith(
        os.path.join("scratch", "window_0", "mf", "params.msgpack"))
    assert config["model"]["mf"]["train"]["epochs"] == 1.0
    with open(os.path.join(workdir, "refresh.md")) as f:
        report = f.read()
    assert "| stale |" in report and "refresh compute =" in report
    assert "| pooled |" in report  # refresh against stale and scratch, paired over users


def test_an_unset_warm_start_keeps_teacher_fingerprints():
    """Cached teachers stay valid across code changes that add unset keys: the main
    job's seed-0 teacher has kept this fingerprint since the tie-order fix. (Change
    it only with a change to the teacher's config or data, and say so.)"""
    from configs import ml100k_distill

    from rec_jax.recipes import artifacts

    config = ml100k_distill.get_config()
    # The fixed protocol's seed-0 teacher (halves, patience 20, min_epochs 100).
    assert artifacts.fingerprint(config) == "1f431e5e930ee2d8"
    config.teacher.train.min_epochs = 0.0  # the teacher tuned before min_epochs
    assert artifacts.fingerprint(config) == "acc9b3379317e790"
    config.eval.selection = "all"  # the protocol of that teacher (selection keyed since)
    config.teacher.train.patience = 10  # (its patience then)
    assert artifacts.fingerprint(config) == "a988d40b411ec9a8"
    config.teacher.train.init_from = "elsewhere/params.msgpack"
    assert artifacts.fingerprint(config) != "a988d40b411ec9a8"
