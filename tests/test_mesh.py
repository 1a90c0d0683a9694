"""Mesh mode on 8 fake CPU devices, and the multi-step pmap on the usual 4.

conftest.py gives the test process 4 devices, so the 8-device checks run once
in a child process (this file run as a script with
``--xla_force_host_platform_device_count=8``) that prints its measurements as
JSON; the tests below assert on them:

(a) mesh-mode BPR-MF steps on a (4, 2) mesh (item tables row-sharded two
    ways, batch split four ways) give the same losses and parameters as the
    pmapped step on 8 devices and as one unsharded device;
(b) top-K over a row-sharded table (merged per-shard top-Ks) equals the dense
    top-K, known items masked, for random vectors and for the MF of (a);
(c) the table rows really are split: each device's shard holds I / M rows.

The multi-step pmap (k steps per call through ``lax.scan``) must equal k
single steps; it runs in this process on the usual 4 devices.

``config.parallel=mesh`` end to end: the tiny MF through ``rec_jax.main`` in
mesh mode (4 devices, a (2, 2) mesh) ends with the validation and test
metrics of the default pmap run at the same global batch, and so does the
same run on 2 processes x 2 devices, whose SIGKILLed copy resumes to exactly
the uninterrupted 2-process run's results. In
process: the sharded evaluator equals the dense one on every metric and
segment, bad settings of the switch are refused, sharded checkpoints restore
into their shardings, and a KD + fusion student trains on a (2, 2) mesh
to the params of the same steps on one device.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys

import numpy as np
import pytest

MESH_SHAPE = (4, 2)  # (data, model): 1,682 ml-100k items shard 2 ways (841 rows each)
TOPK_MESH = (2, 4)
STEPS = 3
PER_DEVICE = 32


# ---------------------------------------------------------------------------
# The child: runs with 8 devices, prints JSON.
# ---------------------------------------------------------------------------


def _child(data_dir: str) -> dict:
    import jax

    from configs import common
    from rec_jax.data import dataset as dataset_lib
    from rec_jax.data import features, interactions, splits
    from rec_jax.data.pipeline import TrainPipeline
    from rec_jax.eval import sharded
    from rec_jax import recipes
    from rec_jax import sharding
    from rec_jax.train import mesh as mesh_lib
    from rec_jax.train import optim, step as step_lib

    assert jax.device_count() == 8, jax.devices()
    out: dict = {}
    ds = dataset_lib.load("100k", data_dir)
    data = interactions.build(ds, splits.make_split(ds, "ratio", seed=0))
    side = features.side_features(ds)
    config = common.base_config()
    spec = recipes.model_spec("mf", config, data, side)
    tx = optim.make_optimizer(common.optim_section(lr=0.01), total_steps=100)
    # Host copies: mesh mode donates its state, which must not alias these.
    params = jax.device_get(spec.init(jax.random.PRNGKey(0)))
    key = jax.random.PRNGKey(1)
    pipeline = TrainPipeline(spec.source, PER_DEVICE, seed=0, engine="numpy")

    # (a) pmap on 8 devices: the trainer's step.
    p_step = step_lib.make_pmapped_step(spec.loss_fn, tx)
    state_p = step_lib.replicate(step_lib.init_state(params, tx))
    side_p, frozen_p = step_lib.replicate(side), step_lib.replicate(None)
    losses_p = []
    for s in range(STEPS):
        state_p, sums = p_step(state_p, pipeline.host_batch(s), side_p, frozen_p, key)
        losses_p.append(float(step_lib.unreplicate(sums)["loss"]))
    params_p = step_lib.unreplicate(state_p.params)

    # (a) unsharded: the global step on one device, the whole global batch.
    one = jax.jit(functools.partial(step_lib.global_train_step, loss_fn=spec.loss_fn, tx=tx))
    state_1 = jax.device_put(step_lib.init_state(params, tx), jax.devices()[0])
    losses_1 = []
    for s in range(STEPS):
        state_1, sums = one(state_1, pipeline.global_host_batch(s), side, None, key)
        losses_1.append(float(sums["loss"]))
    params_1 = jax.device_get(state_1.params)

    # (a) mesh mode.
    mesh = sharding.make_mesh(MESH_SHAPE)
    state = step_lib.init_state(params, tx)
    shardings = sharding.tree_shardings(state, mesh, data.num_items)
    state_m = jax.device_put(state, shardings)
    side_shardings = sharding.tree_shardings(side, mesh, data.num_items)
    m_step = mesh_lib.make_mesh_step(spec.loss_fn, tx, mesh, shardings, side_shardings)
    side_m = jax.device_put(side, side_shardings)
    losses_m, examples_m = [], []
    for batch in pipeline.mesh_batches(0, STEPS, sharding.batch_sharding(mesh)):
        state_m, sums = m_step(state_m, batch, side_m, None, key)
        losses_m.append(float(sums["loss"]))
        examples_m.append(float(sums["examples"]))
    params_m = jax.device_get(state_m.params)

    def max_diff(a, b):
        return max(float(np.abs(np.asarray(x) - np.asarray(y)).max())
                   for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

    out["a"] = {
        "losses_pmap": losses_p, "losses_one": losses_1, "losses_mesh": losses_m,
        "examples_mesh": examples_m, "global_batch": pipeline.global_batch,
        "params_mesh_vs_pmap": max_diff(params_m, params_p),
        "params_mesh_vs_one": max_diff(params_m, params_1),
        "moments_mesh_vs_one": max_diff(jax.device_get(state_m.opt_state),
                                        jax.device_get(state_1.opt_state)),
        "params_moved": max_diff(params_m, params),
        "step_mesh": int(state_m.step),
    }

    # (c) where the rows live.
    table = state_m.params["item_embed"]["embedding"]
    bias = state_m.params["item_bias"]
    users = state_m.params["user_embed"]["embedding"]
    (mu,) = [x for path, x in jax.tree_util.tree_leaves_with_path(state_m.opt_state)
             if ".mu" in jax.tree_util.keystr(path) and "item_embed" in jax.tree_util.keystr(path)]
    out["c"] = {
        "num_items": data.num_items, "num_users": data.num_users,
        "table_shards": [list(s.data.shape) for s in table.addressable_shards],
        "table_row_starts": sorted({s.index[0].start or 0 for s in table.addressable_shards}),
        "bias_shards": [list(s.data.shape) for s in bias.addressable_shards],
        "moment_shards": [list(s.data.shape) for s in mu.addressable_shards],
        "user_shards": [list(s.data.shape) for s in users.addressable_shards],
        "devices": len(table.addressable_shards),
        "side_genre_shards": [list(s.data.shape)
                              for s in side_m["item_genres"].addressable_shards],
    }

    # (b) sharded top-K vs dense, on a (2, 4) mesh.
    topk_mesh = sharding.make_mesh(TOPK_MESH)
    k = 20
    results = {}
    rng = np.random.default_rng(0)
    # Random: 1,003 items (padded to 1,004 = 4 x 251), 37 users (padded to 38).
    vecs = rng.normal(size=(37, 16)).astype(np.float32)
    items = rng.normal(size=(1003, 16)).astype(np.float32)
    item_bias = rng.normal(size=1003).astype(np.float32)
    dense_top = np.asarray(sharded.dense_top_k(vecs, items, item_bias,
                                               -np.ones((37, 1), np.int32), k)[1])
    # Known items: each user's 5 best items (so masking changes the answer),
    # some random ones, and -1 padding.
    known = np.full((37, 12), -1, np.int32)
    known[:, :5] = dense_top[:, :5]
    known[::2, 5:9] = rng.integers(0, 1003, (19, 4))
    cases = {"random": (vecs, items, item_bias, known)}
    # The trained MF of (a): users' known items from the split.
    eval_users = np.arange(64, dtype=np.int32)
    cases["mf"] = (np.asarray(params_m["user_embed"]["embedding"])[eval_users],
                   np.asarray(params_m["item_embed"]["embedding"]),
                   np.asarray(params_m["item_bias"]),
                   sharded.known_item_ids(data.known_items("test"), eval_users))
    for name, (u, t, b, kn) in cases.items():
        t_s, b_s, n = sharded.shard_item_table(t, b, topk_mesh)
        s_scores, s_items = sharded.sharded_top_k(u, t_s, b_s, kn, k, topk_mesh, n)
        d_scores, d_items = sharded.dense_top_k(u, t, b, kn, k)
        s_items, d_items = np.asarray(s_items), np.asarray(d_items)
        known_hit = any(set(s_items[r]) & set(kn[r][kn[r] >= 0]) for r in range(len(u)))
        results[name] = {
            "items_equal": bool(np.array_equal(s_items, d_items)),
            "score_diff": float(np.abs(np.asarray(s_scores) - np.asarray(d_scores)).max()),
            "known_in_top": bool(known_hit),
            "max_item": int(s_items.max()),
            "num_items": int(n),
            "table_shards": [list(s.data.shape) for s in t_s.addressable_shards],
            "top_changed_by_mask": bool(not np.array_equal(
                s_items, np.asarray(sharded.dense_top_k(u, t, b, -np.ones_like(kn), k)[1]))),
        }
    out["b"] = results
    return out


# ---------------------------------------------------------------------------
# The tests (4-device process).
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def child(data_dir):
    from conftest import REPO_ROOT, subprocess_env
    proc = subprocess.run([sys.executable, __file__, data_dir], cwd=REPO_ROOT,
                          env=subprocess_env(8), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_mesh_step_matches_pmap_and_one_device(child):
    a = child["a"]
    assert a["step_mesh"] == STEPS
    assert a["examples_mesh"] == [8 * PER_DEVICE] * STEPS == [a["global_batch"]] * STEPS
    np.testing.assert_allclose(a["losses_mesh"], a["losses_pmap"], rtol=1e-5)
    np.testing.assert_allclose(a["losses_mesh"], a["losses_one"], rtol=1e-5)
    assert a["params_mesh_vs_pmap"] < 1e-5
    assert a["params_mesh_vs_one"] < 1e-5
    assert a["moments_mesh_vs_one"] < 1e-5
    assert a["params_moved"] > 1e-3  # the steps changed the parameters


@pytest.mark.slow
def test_sharded_top_k_equals_dense(child):
    for name, r in child["b"].items():
        assert r["items_equal"], name
        assert r["score_diff"] < 1e-4, name
        assert not r["known_in_top"], name  # known items never recommended
        assert r["max_item"] < r["num_items"], name  # padding rows never win
        assert r["top_changed_by_mask"], name  # the mask mattered
    # 1,003 random items padded to 1,004 over 4 model shards x 2 data replicas.
    assert child["b"]["random"]["table_shards"] == [[251, 16]] * 8


@pytest.mark.slow
def test_item_rows_are_split_across_devices(child):
    c = child["c"]
    rows = c["num_items"] // MESH_SHAPE[1]
    assert c["devices"] == 8
    assert c["table_shards"] == [[rows, 64]] * 8
    assert c["table_row_starts"] == [0, rows]
    assert c["bias_shards"] == [[rows]] * 8
    assert c["moment_shards"] == [[rows, 64]] * 8  # Adam moments follow their params
    assert c["side_genre_shards"][0][0] == rows  # item side tables too
    assert c["user_shards"] == [[c["num_users"], 64]] * 8  # replicated


# ---------------------------------------------------------------------------
# Multi-step pmap (4 devices, in process).
# ---------------------------------------------------------------------------


def test_chunk_lengths_end_at_alignment_points():
    from rec_jax.bench.multistep import chunk_lengths
    assert chunk_lengths(0, 10, 4) == [4, 4, 2]
    assert chunk_lengths(0, 3, 1) == [1, 1, 1]
    # Resumed at 437, logging every 50 steps: chunks end at 450 and 500.
    lengths = chunk_lengths(437, 520, 8, align=(50,))
    ends = np.cumsum(lengths) + 437
    assert sum(lengths) == 83 and max(lengths) <= 8
    assert 450 in ends and 500 in ends and ends[-1] == 520


def test_multi_step_equals_single_steps(ml100k_ratio):
    import jax

    from configs import common
    from rec_jax import recipes
    from rec_jax.bench import multistep
    from rec_jax.data import features
    from rec_jax.data.pipeline import TrainPipeline
    from rec_jax.train import optim, step as step_lib

    data = ml100k_ratio
    side = features.side_features(data.dataset)
    spec = recipes.model_spec("mf", common.base_config(), data, side)
    tx = optim.make_optimizer(common.optim_section(lr=0.01), total_steps=100)
    params = spec.init(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(1)
    pipeline = TrainPipeline(spec.source, PER_DEVICE, seed=0, engine="numpy")
    side_r, frozen_r = step_lib.replicate(side), step_lib.replicate(None)

    single = step_lib.make_pmapped_step(spec.loss_fn, tx)
    state_s = step_lib.replicate(step_lib.init_state(params, tx))
    total = 0.0
    for batch in pipeline.device_batches(0, 4):
        state_s, sums = single(state_s, batch, side_r, frozen_r, key)
        total += float(step_lib.unreplicate(sums)["loss"])

    multi = multistep.make_pmapped_multi_step(spec.loss_fn, tx)
    state_m = step_lib.replicate(step_lib.init_state(params, tx))
    chunks = list(multistep.device_batches(pipeline, 0, 4, steps_per_call=2))
    assert [c["user"].shape[:3] for c in chunks] == [(4, 2, PER_DEVICE)] * 2
    host = pipeline.host_batch(3)
    np.testing.assert_array_equal(np.asarray(chunks[1]["negatives"])[:, 1], host["negatives"])
    total_m = 0.0
    for batch in chunks:
        state_m, sums = multi(state_m, batch, side_r, frozen_r, key)
        total_m += float(step_lib.unreplicate(sums)["loss"])
    assert int(step_lib.unreplicate(state_m.step)) == 4
    np.testing.assert_allclose(total_m, total, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(step_lib.unreplicate(state_m.params)),
                    jax.tree.leaves(step_lib.unreplicate(state_s.params))):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------
# config.parallel=mesh through the main command (subprocesses: 1 x 4 devices,
# 2 processes x 2 devices).
# ---------------------------------------------------------------------------

# The tiny MF (3 epochs of 39 steps at global batch 2048): mesh mode on 4
# devices (per-device 512, auto mesh (2, 2): 841 item rows per device) vs the
# default pmap on 1 device (per-device 2048), the same global batches.
MESH_FLAGS = ("--config.models=mf", "--config.parallel=mesh",
              "--config.model.mf.train.batch_size_per_device=512")
MESH_TOTAL_STEPS = 3 * (80_024 // 2048)


def _run_main(workdir, flags, devices):
    from conftest import REPO_ROOT, subprocess_env
    command = [sys.executable, "-m", "rec_jax.main", "--config=configs/ml100k_mf.py:tiny",
               f"--workdir={workdir}", "--config.progress=off",
               f"--config.data.data_dir={REPO_ROOT / 'data'}", *flags]
    out = subprocess.run(command, cwd=REPO_ROOT, env=subprocess_env(devices),
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-5000:])
    return out


def _results(workdir):
    import os
    with open(os.path.join(workdir, "mf", "results.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def mesh_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("mesh") / "run")
    out = _run_main(workdir, MESH_FLAGS, devices=4)
    return workdir, out.stdout


@pytest.mark.slow
def test_main_mesh_mode_matches_pmap(mesh_run, tmp_path):
    workdir, stdout = mesh_run
    assert "mesh mode: (data, model) = (2, 2), item rows per device 841" in stdout
    pmap_dir = str(tmp_path / "pmap")
    _run_main(pmap_dir, ("--config.models=mf",), devices=1)
    mesh, pmap = _results(workdir), _results(pmap_dir)
    assert mesh["info"]["parallel"] == "mesh" and "parallel" not in pmap["info"]
    for key in ("best_step", "steps_done", "stopped_early"):
        assert mesh["info"][key] == pmap["info"][key], key
    assert mesh["info"]["steps_done"] == MESH_TOTAL_STEPS
    for part in ("valid", "test"):
        assert mesh[part].keys() == pmap[part].keys()
        assert mesh[part]["users"] == pmap[part]["users"] > 900
        for key in mesh[part]:
            assert mesh[part][key] == pytest.approx(pmap[part][key], abs=1e-5), (part, key)
    # The sharded evaluator's recs are the dense evaluator's.
    for part in ("valid", "test"):
        with open(f"{workdir}/mf/recs_{part}.csv") as f:
            rows1 = f.read().splitlines()
        with open(f"{pmap_dir}/mf/recs_{part}.csv") as f:
            rows2 = f.read().splitlines()
        assert len(rows1) == len(rows2)
        same = sum(a.split(",")[:3] == b.split(",")[:3] for a, b in zip(rows1, rows2))
        assert same >= 0.999 * len(rows1)  # (exact ties may swap)


@pytest.mark.slow
def test_two_process_mesh_run_matches_one_process_and_resumes(mesh_run, tmp_path, data_dir):
    """The same tiny MF on 2 processes x 2 devices (the (2, 2) mesh's "data"
    axis across the processes, each feeding its half of every global batch)
    ends at the 1-process x 4-device mesh run's metrics; both processes wrote
    their part of the checkpoints; and a 2-process run SIGKILLed after a
    checkpoint resumes (restored shard by shard into the mesh) to exactly
    where the uninterrupted 2-process run ended."""
    from test_multihost import _kill_at_first_checkpoint, _retry_if_hung, _two_processes, _wait

    reference, _ = mesh_run
    mesh = ("--config.parallel=mesh",)  # with test_multihost's flags, MESH_FLAGS
    multi = str(tmp_path / "multi")
    _retry_if_hung(lambda: _wait(_two_processes(multi, data_dir, mesh)), multi)
    got, want = _results(multi), _results(reference)
    assert got["info"]["parallel"] == "mesh"
    for key in ("best_step", "steps_done", "stopped_early"):
        assert got["info"][key] == want["info"][key], key
    for part in ("valid", "test"):
        assert got[part].keys() == want[part].keys()
        for key in want[part]:
            assert got[part][key] == pytest.approx(want[part][key], abs=1e-5), (part, key)
    import os
    state = os.path.join(multi, "mf", "ckpt", str(MESH_TOTAL_STEPS), "state")
    for process in (0, 1):  # each process wrote its own shards (and halves of replicated ones)
        assert os.listdir(os.path.join(state, f"ocdbt.process_{process}", "d")), process

    resumed = str(tmp_path / "resumed")
    steps = _retry_if_hung(lambda: _kill_at_first_checkpoint(
        _two_processes(resumed, data_dir, mesh), resumed, poll=0.01), resumed)
    assert steps and steps[-1] < MESH_TOTAL_STEPS, f"the kill did not land mid-training: {steps}"
    _retry_if_hung(lambda: _wait(_two_processes(resumed, data_dir, mesh)), resumed, resume=True)
    with open(tmp_path / "log_resumed_0.txt") as f:  # (a retry resumes from a later one)
        found = re.search(r"resumed from step (\d+)", f.read())
    assert found and int(found.group(1)) >= steps[-1], found
    after = _results(resumed)
    assert after["valid"] == got["valid"] and after["test"] == got["test"]
    for key in ("best_step", "steps_done", "stopped_early"):
        assert after["info"][key] == got["info"][key], key


def test_sharded_evaluator_equals_dense_evaluator(ml100k):
    """Every metric and segment (cold and cold_only included) of the mesh-mode
    evaluator equals the dense one, for MF (with bias) and SASRec (without)."""
    import jax

    from configs import common
    from rec_jax.data import features, interactions, splits
    from rec_jax.eval.evaluator import Evaluator
    from rec_jax.eval.sharded import ShardedEvaluator
    from rec_jax import recipes
    from rec_jax import sharding

    data = interactions.build(ml100k, splits.make_split(ml100k, "cold_items", 0, 0.1))
    side = features.side_features(ml100k, ml100k.item[data.split.train])
    config = common.base_config()
    config.model.sasrec.num_layers = 1
    mesh = sharding.make_mesh((2, 2))
    for name in ("mf", "sasrec"):
        spec = recipes.model_spec(name, config, data, side)
        params = jax.device_get(spec.init(jax.random.PRNGKey(3)))
        if name == "mf":  # A non-zero bias, so the cold_only bias mask matters.
            params["item_bias"] = np.random.default_rng(0).normal(size=data.num_items)
        dense = Evaluator(data, "test", batch_users=128)
        sharded = ShardedEvaluator(data, "test", mesh, spec.user_vectors_fn, spec.item_table_fn,
                                   batch_users=128)
        want, want_recs = dense.evaluate(spec.score_fn, params, side, spec.make_query)
        got, got_recs = sharded.evaluate(spec.score_fn, params, side, spec.make_query)
        assert "cold_only/ndcg@10" in got and got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key], abs=1e-6), (name, key)
        np.testing.assert_array_equal(got_recs["items"], want_recs["items"])
        np.testing.assert_allclose(got_recs["scores"], want_recs["scores"], rtol=1e-5)


def test_parallel_config_is_checked():
    from configs import common
    from rec_jax.train import parallel
    config = common.base_config()
    assert (config.parallel, config.mesh_shape) == ("pmap", "auto")
    assert isinstance(parallel.make_layout(config, "mf", 1682), parallel.PmapLayout)
    config.parallel = "meshh"
    with pytest.raises(ValueError, match="config.parallel"):
        parallel.check_config(config)
    config.parallel, config.mesh_shape = "mesh", "3,3"
    with pytest.raises(ValueError, match="config.mesh_shape"):
        parallel.check_config(config)
    # The teacher falls back to pmap (logged), students get the mesh.
    config.mesh_shape = "1,-1"
    assert isinstance(parallel.make_layout(config, "teacher", 1682, can_mesh=False),
                      parallel.PmapLayout)
    layout = parallel.make_layout(config, "mf", 1682)
    assert dict(layout.mesh.shape) == {"data": 1, "model": 4}
    assert parallel.mesh_shape("auto", 4, 1682) == (2, 2)  # 1,682 = 2 x 841
    assert parallel.mesh_shape("auto", 8, 1000) == (1, 8)
    assert parallel.mesh_shape("auto", 4, 7) == (4, 1)
    assert parallel.mesh_shape("-1,2", 8, 1) == (4, 2)


# ---------------------------------------------------------------------------
# Sharded checkpoints, and the KD / fusion students on the mesh (4 devices, in process).
# ---------------------------------------------------------------------------


def test_sharded_checkpoint_restores_into_its_shardings(tmp_path):
    """Arrays on the mesh are saved as they lie (no host copy) and come back
    in the shardings asked for: rows split on "model", or host numpy."""
    import jax

    from rec_jax import sharding
    from rec_jax.train.checkpoint import Checkpointer

    mesh = sharding.make_mesh((2, 2))
    host = {"table": np.arange(8 * 3, dtype=np.float32).reshape(8, 3),
            "w": np.float32([1.5, -2.0]), "step": np.asarray(7, np.int32)}
    shardings = sharding.tree_shardings(host, mesh, num_items=8)
    tree = sharding.place(host, shardings)
    assert [s.data.shape for s in tree["table"].addressable_shards] == [(4, 3)] * 4
    assert sharding.place(tree, shardings)["table"] is tree["table"]  # already there: kept
    assert sharding.process_rows(sharding.batch_sharding(mesh), 6) == slice(0, 6)

    ckpt = Checkpointer(str(tmp_path / "ckpt"))
    ckpt.save(3, tree, {"done": False})
    restored, meta = ckpt.restore(host, shardings=shardings)
    on_host, _ = ckpt.restore(host)
    ckpt.close()
    assert meta == {"done": False}
    table = restored["table"]
    assert table.sharding.is_equivalent_to(shardings["table"], 2)
    assert sorted((s.index[0].start or 0, s.data.shape) for s in table.addressable_shards) == \
        [(0, (4, 3)), (0, (4, 3)), (4, (4, 3)), (4, (4, 3))]
    for name in host:
        np.testing.assert_array_equal(np.asarray(jax.device_get(restored[name])), host[name])
        assert isinstance(on_host[name], np.ndarray)
        np.testing.assert_array_equal(on_host[name], host[name])


KD_STEPS = 3


@pytest.mark.slow
def test_kd_fusion_student_trains_in_mesh_mode(ml100k_ratio, tmp_path):
    """mf_kd_fusion (both variants at once: the cached teacher's artifacts in
    the batch and side tables, its item vectors fused into the item input)
    through trainer.fit on a (2, 2) mesh, teacher tables row-sharded with the
    item tables, ends at the params of the same global steps on one device,
    and its checkpoint restores into the mesh shardings.

    The teacher is an untrained MF's towers (top 20 per user): the plumbing
    is what is tested, which needs no good teacher and no BERT.
    """
    import functools

    import jax

    from configs import ml100k_distill
    from rec_jax import recipes
    from rec_jax import run as run_lib
    from rec_jax.recipes import artifacts as artifacts_lib
    from rec_jax.recipes import kd
    from rec_jax.train import parallel, trainer
    from rec_jax.train import step as step_lib
    from rec_jax.train.checkpoint import Checkpointer

    data, name = ml100k_ratio, "mf_kd_fusion"
    config = ml100k_distill.get_config("tiny")
    config.data.split = "ratio"
    config.parallel = "mesh"
    side = run_lib.build_side(config, data, [name])  # cached KD, fusion on vectors: no text
    source = recipes.model_spec("mf", config, data, side)
    arrays = artifacts_lib.compute_from_towers(
        source, jax.device_get(source.init(jax.random.PRNGKey(0))), side, data, 20)
    bundle = kd.TeacherBundle("cached", arrays["item_vec"].shape[1], 10, 1.0, artifacts=arrays)
    teacher = recipes.TeacherAccess(arrays=lambda: arrays, params=lambda: None,
                                    bundle=lambda: bundle)
    spec, model_side = recipes.build(name, config, data, side, teacher)
    assert model_side["teacher"]["item_vec"].shape[0] == data.num_items  # row-sharded too
    cfg = recipes.model_config(config, name)
    cfg.train.update(steps=KD_STEPS, epochs=0.0, batch_size_per_device=64,
                     input_engine="numpy")  # (mesh batches never use tf.data)
    # SGD: Adam would turn float rounding in gradients that are zero in exact
    # arithmetic (the bias before the fusion LayerNorm) into lr-sized steps.
    cfg.optim.update(name="sgd", lr=0.05)
    layout = parallel.make_layout(config, name, data.num_items)
    assert dict(layout.mesh.shape) == {"data": 2, "model": 2}
    evaluator = run_lib.make_evaluator(data, "valid", config, spec, layout,
                                       users=np.arange(64, dtype=np.int32))
    assert evaluator.ranks_on_mesh
    folder = str(tmp_path / name)
    fitted = trainer.fit(spec, cfg, model_side, folder, evaluator, 0, "off", layout)
    assert fitted.meta["steps_done"] == KD_STEPS and fitted.meta["best_step"] == KD_STEPS

    # The same global steps on one device (no donation: `state` stays the template).
    pipeline, total, tx, state, key = trainer._setup(spec, cfg, 0)
    template = {"state": state, "best": state.params}
    one = jax.jit(functools.partial(step_lib.global_train_step, loss_fn=spec.loss_fn, tx=tx))
    init = jax.device_get(state.params)
    for s in range(total):
        state, _ = one(state, pipeline.global_host_batch(s), model_side, spec.frozen, key)
    want = jax.device_get(state.params)
    # The mesh sums a user's gradient over shards in another order than one
    # device does; through the fusion LayerNorm that leaves ~1e-5 differences
    # on a few rows (seen on AMD EPYC), well below the 2e-3 the 3 steps move.
    moved = max(float(np.abs(np.asarray(r) - np.asarray(i)).max())
                for r, i in zip(jax.tree.leaves(want), jax.tree.leaves(init)))
    assert moved > 1e-3
    for (path, got), ref in zip(jax.tree_util.tree_leaves_with_path(fitted.params),
                                jax.tree.leaves(want)):
        np.testing.assert_allclose(got, ref, atol=5e-5, rtol=0,
                                   err_msg=jax.tree_util.keystr(path))

    # The checkpoint comes back straight into the mesh layout, tables split by rows.
    ckpt = Checkpointer(f"{folder}/ckpt")
    restored, meta = ckpt.restore(template, shardings=layout.restore_shardings(template))
    ckpt.close()
    assert meta["done"] and int(restored["state"].step) == KD_STEPS
    tables = [x for x in jax.tree.leaves(restored) if np.ndim(x) and x.shape[0] == data.num_items]
    assert len(tables) >= 4  # item embedding and bias, in params and best params
    for x in tables:
        assert {s.data.shape[0] for s in x.addressable_shards} == {data.num_items // 2}
    for got, ref in zip(jax.tree.leaves(restored["best"]), jax.tree.leaves(fitted.params)):
        np.testing.assert_array_equal(np.asarray(jax.device_get(got)), ref)


if __name__ == "__main__":
    import os
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    print(json.dumps(_child(sys.argv[1])))
