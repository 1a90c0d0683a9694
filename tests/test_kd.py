"""The distillation objective (rec_jax/distill/kd.py) with a real teacher on ml-100k.

One untrained (freshly initialised) tiny teacher serves every test: what is
checked is the plumbing, which does not need a good teacher. The design says
the teacher may run `cached` (its artifacts ride in the batch) or `online`
(its frozen params enter the step) and that both give the same loss on the
same batch; here they must also give the same gradients.
"""

from __future__ import annotations

import copy
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DATA_DIR

from configs import ml100k_distill
from rec_jax.data.pipeline import TrainPipeline
from rec_jax import recipes
from rec_jax import run as run_lib
from rec_jax.recipes import artifacts as artifacts_lib
from rec_jax.recipes import kd
from rec_jax.train import optim
from rec_jax.train import step as step_lib

ARTIFACT_TOPK = 20
BATCH = 16


def _config():
    config = ml100k_distill.get_config("tiny")
    config.data.data_dir = str(DATA_DIR)  # where the BERT text cache already is
    config.data.split = "ratio"  # the ml100k_ratio fixture's split
    # Shorter histories than `tiny`: compile time, not coverage, is what they cost.
    config.teacher.max_len = 10
    config.teacher.profile_len = 10  # the ratio split's teacher reads a bag (profile tower)
    config.model.sasrec.max_len = 10
    config.teacher.artifact_topk = ARTIFACT_TOPK
    return config


def _make_setup(data):
    """(config, data, side, teacher parts, teacher params, artifacts, bundles)."""
    config = _config()
    side = run_lib.build_side(config, data, ["teacher"])  # frozen-BERT text tables (cached)
    teacher = recipes.model_spec("teacher", config, data, side)
    params = jax.jit(teacher.init)(jax.random.PRNGKey(0))  # jit: faster than eager init here
    arrays = artifacts_lib.compute(teacher.module, params, side, data, teacher.make_query,
                                   ARTIFACT_TOPK)
    dim, temp = config.teacher.dim, config.teacher.temperature
    max_len = recipes.teacher_history_len(config.teacher, data)
    bundles = {
        "cached": kd.TeacherBundle("cached", dim, max_len, temp, artifacts=arrays),
        "online": kd.TeacherBundle("online", dim, max_len, temp, module=teacher.module,
                                   params=params),
    }
    return {"config": config, "data": data, "side": side, "teacher": teacher,
            "params": params, "arrays": arrays, "bundles": bundles}


@pytest.fixture(scope="module")
def setup(ml100k_ratio):
    return _make_setup(ml100k_ratio)


def _spec(setup, family, mode, config=None):
    config = config or setup["config"]
    student = recipes.model_spec(f"{family}_kd", config, setup["data"], setup["side"])
    return kd.kd_spec(student, setup["bundles"][mode], config, setup["data"], setup["side"])


def _batch(spec, n=BATCH):
    """n examples spread over the training set (many users), the same in either mode."""
    rng = np.random.default_rng(0)
    ids = np.sort(rng.choice(spec.source.num_examples, n, replace=False))
    return spec.source.make_batch(ids, rng)


def _max_diff(a, b):
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a),
                                                                jax.tree.leaves(b)))


def test_artifacts_have_documented_shapes(setup):
    a, data = setup["arrays"], setup["data"]
    d = setup["config"].teacher.dim
    assert a["user_vec"].shape == (data.num_users, d)
    assert a["item_vec"].shape == (data.num_items, d)
    assert a["item_bias"].shape == (data.num_items,)
    assert a["topk_items"].shape == a["topk_scores"].shape == (data.num_users, ARTIFACT_TOPK)
    assert a["ctr_prob"].shape == (len(data.split.train),)
    assert a["genre_prob"].shape == (data.num_items, 19)
    # Top-K lists exclude each user's training items and are sorted best first.
    train = data.train.dense(np.arange(data.num_users))
    assert not np.take_along_axis(train, a["topk_items"].astype(int), axis=1).any()
    assert np.all(np.diff(a["topk_scores"], axis=1) <= 0)
    assert np.all((a["ctr_prob"] > 0) & (a["ctr_prob"] < 1))


def test_online_teacher_view_matches_artifacts(setup):
    """Online mode runs the teacher deterministically: it reproduces the cached
    artifacts (computed with deterministic=True) although the teacher has dropout."""
    assert setup["teacher"].module.dropout > 0  # so dropout in the step would show
    topk = int(setup["config"].distill.topk)
    views = {}
    for mode in ("cached", "online"):
        spec, kside = _spec(setup, "deepfm", mode)  # a CTR student: ctr_prob is read too
        batch = _batch(spec)
        view = jax.jit(lambda b, s, f, bundle=setup["bundles"][mode]: dataclasses.asdict(
            kd.teacher_view(bundle, b, s, f, topk)))(batch, kside, spec.frozen)
        views[mode] = view
    c, o = views["cached"], views["online"]
    np.testing.assert_array_equal(c["topk_items"], o["topk_items"])
    for field in ("user_vec", "item_vec", "item_bias", "topk_scores", "genre_prob", "ctr_prob"):
        np.testing.assert_allclose(o[field], c[field], rtol=1e-4, atol=1e-5, err_msg=field)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["mf", "sasrec", "deepfm"])
def test_cached_and_online_give_same_loss_and_gradients(setup, family):
    results, params = {}, None
    for mode in ("cached", "online"):
        spec, kside = _spec(setup, family, mode)
        if params is None:  # the same student params in both modes
            params = jax.jit(spec.init)(jax.random.PRNGKey(1))
        batch = _batch(spec)
        # Gradients w.r.t. the student (arg 0) and the frozen teacher (arg 3).
        fn = jax.jit(jax.value_and_grad(spec.loss_fn, argnums=(0, 3), has_aux=True))
        (loss, sums), (grads, teacher_grads) = fn(params, batch, kside, spec.frozen,
                                                  jax.random.PRNGKey(2))
        results[mode] = (loss, sums, grads, teacher_grads)
    (lc, sc, gc, _), (lo, so, go, tg) = results["cached"], results["online"]
    assert set(sc) == set(so) == {"loss", "examples", "hard_loss", "soft_loss", "rank_loss",
                                  "emb_loss", "aux_loss"}
    for k in sc:
        np.testing.assert_allclose(so[k], sc[k], rtol=1e-4, atol=1e-6, err_msg=k)
    np.testing.assert_allclose(lo, lc, rtol=1e-4, atol=1e-6)
    assert np.isfinite(float(lc)) and float(lc) > 0
    assert jax.tree.structure(gc) == jax.tree.structure(go)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(gc), jax.tree.leaves(go)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6, err_msg=jax.tree_util.keystr(path))
    # The distillation terms do move the student (and the kd heads).
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(gc["kd"]))
    # stop_gradient: nothing flows into the teacher's params.
    assert jax.tree.leaves(tg) and all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(tg))
    print(f"\n[{family}] cached vs online: |loss diff| {abs(float(lo - lc)):.3g}, "
          f"max |grad diff| {_max_diff(gc, go):.3g}")


def test_teacher_params_stay_out_of_the_state_and_unchanged(setup):
    """A few pmapped steps (4 fake devices) in online mode: the teacher enters
    as `frozen`, is not in the train state and is bitwise the same afterwards."""
    spec, kside = _spec(setup, "mf", "online")
    params = jax.jit(spec.init)(jax.random.PRNGKey(1))
    assert set(params) == {"student", "kd"}
    teacher_before = jax.tree.map(lambda x: np.array(x, copy=True), setup["params"])
    tx = optim.make_optimizer(setup["config"].model.mf.optim, 10)
    state = step_lib.replicate(step_lib.init_state(params, tx))
    side_r, frozen_r = step_lib.replicate(kside), step_lib.replicate(spec.frozen)
    p_step = step_lib.make_pmapped_step(spec.loss_fn, tx)
    pipeline = TrainPipeline(spec.source, 8, seed=0, engine="numpy")
    for batch in pipeline.device_batches(0, 3):
        state, sums = p_step(state, batch, side_r, frozen_r, jax.random.PRNGKey(3))
    sums = step_lib.unreplicate(sums)
    assert sums["nonfinite"] == 0 and np.isfinite(sums["loss"])
    after = step_lib.unreplicate(state)
    assert int(after.step) == 3
    assert set(after.params) == {"student", "kd"}
    n_student = recipes.num_params(params)
    assert recipes.num_params(after.params) == n_student  # no teacher leaf crept in
    assert _max_diff(after.params["student"], params["student"]) > 0  # the student trained
    for frozen_now in (step_lib.unreplicate(frozen_r), setup["params"]):
        for a, b in zip(jax.tree.leaves(teacher_before), jax.tree.leaves(frozen_now)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("term", ["hard", "soft", "rank", "emb", "aux"])
def test_zero_alpha_removes_its_term(setup, term):
    """With α_term = 0 the loss is the full loss minus α·term, and (for the
    distillation terms) the term's sum leaves the step's metrics."""
    key = jax.random.PRNGKey(2)
    spec, kside = _spec(setup, "mf", "cached")
    params = jax.jit(spec.init)(jax.random.PRNGKey(1))
    batch = _batch(spec)
    full_loss, full_sums = spec.loss_fn(params, batch, kside, None, key)
    config = copy.deepcopy(setup["config"])
    alpha = float(config.distill.weights[term])
    assert alpha > 0
    config.distill.weights[term] = 0.0
    spec0, _ = _spec(setup, "mf", "cached", config)
    loss, sums = spec0.loss_fn(params, batch, kside, None, key)  # kside: a superset
    term_mean = full_sums[f"{term}_loss"] / full_sums["examples"]
    np.testing.assert_allclose(loss, full_loss - alpha * term_mean, rtol=1e-5, atol=1e-6)
    if term != "hard":  # the label loss is always computed (and logged); see rec_jax.distill.kd.kd_objective
        assert f"{term}_loss" not in sums
        assert set(full_sums) - set(sums) == {f"{term}_loss"}


def test_topk_beyond_artifacts_is_refused(setup):
    config = copy.deepcopy(setup["config"])
    config.distill.topk = ARTIFACT_TOPK + 1
    with pytest.raises(ValueError, match=r"config.distill.topk=21 exceeds.*top-20"):
        _spec(setup, "mf", "cached", config)
    config.distill.topk = ARTIFACT_TOPK  # exactly the artifacts' K is fine
    _spec(setup, "mf", "cached", config)


def dict_with(config, **values):
    """A copy of config with top-level values replaced."""
    out = copy.deepcopy(config)
    for key, value in values.items():
        out[key] = value
    return out


def test_artifacts_from_another_split_or_seed_are_refused(setup, tmp_path):
    config = setup["config"]
    path = str(tmp_path / "artifacts.npz")
    artifacts_lib.save(path, setup["arrays"], config)
    loaded = artifacts_lib.load(path, copy.deepcopy(config))
    np.testing.assert_array_equal(loaded["topk_items"], setup["arrays"]["topk_items"])
    assert float(loaded["temperature"]) == config.teacher.temperature
    for key, value in (("seed", 1), ("data.split", "loo_time"), ("teacher.dim", 64)):
        other = copy.deepcopy(config)
        section, _, name = key.rpartition(".")
        (other[section] if section else other)[name] = value
        with pytest.raises(ValueError, match="another config, data split or seed"):
            artifacts_lib.load(path, other)
    # `loo_time` with ties ordered by a seeded permutation is another split per seed.
    loo = copy.deepcopy(config)
    loo.data.split = "loo_time"
    artifacts_lib.save(path, setup["arrays"], loo)
    with pytest.raises(ValueError, match="another config, data split or seed"):
        artifacts_lib.load(path, dict_with(loo, seed=1))
    # With the old item-id tie order it is the same split for every seed: one
    # teacher serves all seeds there.
    loo.data.tie_order = "item_id"
    artifacts_lib.save(path, setup["arrays"], loo)
    loo.seed = 1
    artifacts_lib.load(path, loo)
    loo.data.train_fraction = 0.5  # a seeded subsample of the labels is another split
    with pytest.raises(ValueError, match="another config, data split or seed"):
        artifacts_lib.load(path, loo)
    with pytest.raises(FileNotFoundError, match="Run the teacher stage first"):
        artifacts_lib.load(str(tmp_path / "missing.npz"), config)


@pytest.mark.slow
def test_a_student_as_teacher_without_genre_or_ctr_heads(setup):
    """`<student>_kd@sasrec`: a SASRec's towers make the artifacts (top K over
    the catalogue, training items excluded); with no genre or CTR head those
    arrays are absent and the aux term reads nothing from them."""
    config, data, side = setup["config"], setup["data"], setup["side"]
    source = recipes.model_spec("sasrec", config, data, side)
    params = jax.jit(source.init)(jax.random.PRNGKey(0))
    arrays = artifacts_lib.compute_from_towers(source, params, side, data, ARTIFACT_TOPK)
    assert "genre_prob" not in arrays and "ctr_prob" not in arrays
    assert arrays["item_vec"].shape == (data.num_items, config.model.sasrec.embed_dim)
    train = data.train.dense(np.arange(data.num_users))
    assert not np.take_along_axis(train, arrays["topk_items"].astype(int), axis=1).any()
    # The artifacts' top-K scores are the towers' own dot products.
    users = np.arange(4, dtype=np.int32)
    scores = np.asarray(source.score_fn(params, source.make_query(users, "valid"), side))
    np.testing.assert_allclose(
        np.take_along_axis(scores, arrays["topk_items"][:4].astype(int), axis=1),
        arrays["topk_scores"][:4], rtol=1e-4, atol=1e-4)
    bundle = kd.TeacherBundle("cached", arrays["item_vec"].shape[1], 10, 1.0, artifacts=arrays)
    for family in ("mf", "deepfm"):  # deepfm: a CTR student whose batch has rows
        student = recipes.model_spec(f"{family}_kd", config, data, side)
        spec, kside = kd.kd_spec(student, bundle, config, data, side)
        assert "genre_prob" not in kside["teacher"]
        batch = _batch(spec)
        assert "t_ctr_prob" not in batch
        loss, sums = spec.loss_fn(jax.jit(spec.init)(jax.random.PRNGKey(1)), batch, kside, None,
                                  jax.random.PRNGKey(2))
        assert np.isfinite(float(loss))
        assert float(sums["aux_loss"]) == 0.0  # nothing to distil into the aux heads
