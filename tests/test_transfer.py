"""Transfer (student init from teacher vectors) and knowledge fusion (cold items).

rec_jax/distill/transfer.py: PCA / linear maps, rescaling, column placement,
freezing transferred tables for a warm-up; rec_jax/distill/fusion.py and the
students' fusion="add"/"gated": never-seen items are scored from the teacher
vector alone; config.transfer.share: the teacher's item_text_proj copied into
the fusion text path, trainable or frozen.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from ml_collections import ConfigDict

from configs import common
from rec_jax.distill import transfer
from rec_jax.models.fusion import ItemFusion
from rec_jax import recipes
from rec_jax.models import students
from rec_jax.train import optim
from rec_jax.spec import ModelName, ModelSpec

NU, NI = 6, 10  # users, items of the small students


def _teacher_vectors(n=40, d=12, seed=0):
    """Anisotropic teacher vectors: distinct variances along random directions."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(d, d)))
    scales = np.linspace(3.0, 0.2, d)
    return (rng.normal(size=(n, d)) * scales) @ basis.T + 5.0, basis


# ---------------------------------------------------------------------------
# PCA and the transferred tables.
# ---------------------------------------------------------------------------


def test_pca_matches_numpy_svd():
    x, _ = _teacher_vectors()
    codes, components, mean, explained = transfer.pca(x, 4)
    assert codes.shape == (40, 4) and components.shape == (12, 4) and mean.shape == (12,)
    np.testing.assert_allclose(mean, x.mean(0))
    s = np.linalg.svd(x - x.mean(0), compute_uv=False)
    np.testing.assert_allclose(explained, (s[:4] ** 2).sum() / (s ** 2).sum(), rtol=1e-10)
    np.testing.assert_allclose(components.T @ components, np.eye(4), atol=1e-10)
    np.testing.assert_allclose(codes, (x - x.mean(0)) @ components, atol=1e-10)
    variances = codes.var(0)
    assert np.all(np.diff(variances) < 0)  # components ordered by explained variance
    np.testing.assert_allclose(variances * 40, s[:4] ** 2, rtol=1e-8)
    assert transfer.pca(x, 12)[3] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="PCA to 13 dims"):
        transfer.pca(x, 13)


@pytest.mark.parametrize("kind", ["teacher_pca", "teacher_linear"])
def test_transferred_tables_shapes_and_rescaling(kind):
    items, _ = _teacher_vectors()
    users = np.random.default_rng(1).normal(size=(7, 12)) + 5.0
    out = transfer.transferred_tables(kind, items, users, dim=4, item_std=0.05, user_std=0.2)
    assert out["item"].shape == (40, 4) and out["user"].shape == (7, 4)
    assert out["item"].dtype == np.float32
    np.testing.assert_allclose(out["item"].std(), 0.05, rtol=1e-5)
    np.testing.assert_allclose(out["user"].std(), 0.2, rtol=1e-5)
    # Four directions of an anisotropic cloud keep most of its variance (PCA: exactly
    # the top four; the linear autoencoder: close to it).
    s = np.linalg.svd(items - items.mean(0), compute_uv=False)
    best = (s[:4] ** 2).sum() / (s ** 2).sum()
    assert best - 0.05 < out["explained"] <= best + 1e-9
    # No user table asked for, none returned; a student wider than the teacher gets d_t columns.
    assert "user" not in transfer.transferred_tables(kind, items, None, 4, 0.05, None)
    assert transfer.transferred_tables(kind, items, None, 20, 0.05, None)["item"].shape == (40, 12)
    with pytest.raises(ValueError, match="config.transfer.init"):
        transfer.transferred_tables("teacher_svd", items, None, 4, 0.05, None)


def test_pca_transfer_keeps_teacher_geometry():
    """PCA of items and users through the same projection: a user's dot products
    with items rank items like the teacher's, when 4 directions hold the variance."""
    rng = np.random.default_rng(0)
    basis, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    items = rng.normal(size=(40, 4)) @ basis[:, :4].T * 3 + 2.0  # rank-4 cloud + offset
    users = rng.normal(size=(5, 4)) @ basis[:, :4].T + 2.0
    out = transfer.transferred_tables("teacher_pca", items, users, 4, 1.0, 1.0)
    assert out["explained"] == pytest.approx(1.0)
    centre = items.mean(0)
    teacher_scores = (users - centre) @ (items - centre).T
    student_scores = out["user"] @ out["item"].T
    for t, s in zip(teacher_scores, student_scores):
        np.testing.assert_array_equal(np.argsort(t), np.argsort(s))


def _mf_params(dim, seed=0):
    module = students.MF(NU, NI, dim)
    batch = {"user": np.zeros(2, np.int32), "item": np.zeros(2, np.int32),
             "negatives": np.zeros((2, 1), np.int32)}
    return module.init(jax.random.PRNGKey(seed), batch, {})["params"]


@pytest.mark.parametrize("student_dim,teacher_dim", [(8, 4), (4, 6)])
def test_apply_transfer_writes_first_columns_and_keeps_the_rest(student_dim, teacher_dim):
    params = _mf_params(student_dim)
    rng = np.random.default_rng(2)
    t_items = rng.normal(size=(NI, teacher_dim))
    t_users = rng.normal(size=(NU, teacher_dim))
    new, explained = transfer.apply_transfer(params, "mf", "teacher_pca", t_items, t_users)
    k = min(student_dim, teacher_dim)
    old_item = np.asarray(params["item_embed"]["embedding"])
    old_user = np.asarray(params["user_embed"]["embedding"])
    expected = transfer.transferred_tables("teacher_pca", t_items, t_users, student_dim,
                                           float(old_item.std()), float(old_user.std()))
    item = np.asarray(new["item_embed"]["embedding"])
    user = np.asarray(new["user_embed"]["embedding"])
    np.testing.assert_allclose(item[:, :k], expected["item"], rtol=1e-6)
    np.testing.assert_allclose(user[:, :k], expected["user"], rtol=1e-6)
    np.testing.assert_array_equal(item[:, k:], old_item[:, k:])
    np.testing.assert_array_equal(user[:, k:], old_user[:, k:])
    assert explained == pytest.approx(expected["explained"])
    np.testing.assert_array_equal(new["item_bias"], params["item_bias"])
    # The input tree is not modified in place.
    np.testing.assert_array_equal(params["item_embed"]["embedding"], old_item)
    # `random` is the identity.
    same, nan = transfer.apply_transfer(params, "mf", "random", t_items, t_users)
    assert same is params and np.isnan(nan)


# ---------------------------------------------------------------------------
# Freezing transferred tables for a warm-up.
# ---------------------------------------------------------------------------


def test_freeze_steps_hold_transferred_tables_then_release():
    freeze = 3
    base = ModelSpec(name="mf", init=lambda rng: _mf_params(4), loss_fn=None, source=None,
                     score_fn=None, make_query=None)
    rng = np.random.default_rng(3)
    cfg = ConfigDict({"init": "teacher_pca", "freeze_steps": freeze})
    spec = transfer.with_transfer(base, "mf", cfg, rng.normal(size=(NI, 6)),
                                  rng.normal(size=(NU, 6)))
    assert spec.freeze_steps == {"transferred": freeze}
    params = spec.init(jax.random.PRNGKey(0))
    labels = {path: spec.label_fn(path) for path in
              [("user_embed", "embedding"), ("item_embed", "embedding"), ("item_bias",),
               ("student", "item_embed", "embedding"), ("kd", "user_proj", "kernel")]}
    assert list(labels.values()) == ["transferred", "transferred", "rest", "transferred", "rest"]

    tx = optim.make_optimizer(common.optim_section(lr=0.1), 100, params, spec.label_fn,
                              spec.freeze_steps)
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    history = [params]
    for _ in range(freeze + 2):
        updates, state = tx.update(grads, state, history[-1])
        history.append(optax.apply_updates(history[-1], updates))

    def moved(step, *path):
        a, b = history[step - 1], history[step]
        for k in path:
            a, b = a[k], b[k]
        return bool(np.any(np.asarray(a) != np.asarray(b)))

    for step in range(1, freeze + 1):  # optimizer steps 1..N: tables held
        assert not moved(step, "item_embed", "embedding"), step
        assert not moved(step, "user_embed", "embedding"), step
        assert moved(step, "item_bias"), step  # everything else trains from step 1
    for step in (freeze + 1, freeze + 2):  # and then they train
        assert moved(step, "item_embed", "embedding") and moved(step, "user_embed", "embedding")
    # No freezing asked for: the spec keeps its single optimizer group.
    cfg.freeze_steps = 0
    plain = transfer.with_transfer(base, "mf", cfg, np.ones((NI, 6)), np.ones((NU, 6)))
    assert plain.label_fn is None and plain.freeze_steps is None


def test_with_transfer_on_a_distillation_spec():
    base = ModelSpec(name="mf_kd", init=lambda rng: {"student": _mf_params(4),
                                                     "kd": {"w": jnp.ones(3)}},
                     loss_fn=None, source=None, score_fn=None, make_query=None)
    t_items = np.random.default_rng(4).normal(size=(NI, 6))
    spec = transfer.with_transfer(base, "mf", ConfigDict({"init": "teacher_pca",
                                                              "freeze_steps": 0}),
                                  t_items, None)
    params = spec.init(jax.random.PRNGKey(0))
    original = _mf_params(4)
    item = np.asarray(params["student"]["item_embed"]["embedding"])
    expected = transfer.transferred_tables("teacher_pca", t_items, None, 4,
                                           float(np.asarray(original["item_embed"]["embedding"]).std()),
                                           None)["item"]
    np.testing.assert_allclose(item, expected, rtol=1e-6)
    np.testing.assert_array_equal(params["kd"]["w"], np.ones(3))


# ---------------------------------------------------------------------------
# Knowledge fusion.
# ---------------------------------------------------------------------------

DT = 6  # teacher width


def _fusion_side(seed=0):
    rng = np.random.default_rng(seed)
    seen = np.ones(NI, bool)
    seen[[3, 8, 9]] = False
    return {"fusion_text": rng.normal(size=(NI, DT)).astype(np.float32), "item_seen": seen}


def _projected(params, text):
    """LayerNorm then Dense, written out in numpy from the module's params."""
    norm, proj = params["text_norm"], params["text_proj"]
    mu = text.mean(-1, keepdims=True)
    var = text.var(-1, keepdims=True)
    x = (text - mu) / np.sqrt(var + 1e-6) * np.asarray(norm["scale"]) + np.asarray(norm["bias"])
    return x @ np.asarray(proj["kernel"]) + np.asarray(proj["bias"])


@pytest.mark.parametrize("mode", ["add", "gated"])
def test_item_fusion_inductive(mode):
    side = _fusion_side()
    id_emb = np.random.default_rng(5).normal(size=(NI, 4)).astype(np.float32)
    fusion = ItemFusion(4, mode)
    params = fusion.init(jax.random.PRNGKey(0), id_emb, None, side)["params"]
    fused, uses_id = fusion.apply({"params": params}, id_emb, None, side)
    fused = np.asarray(fused)
    projected = _projected(params, side["fusion_text"])
    seen = side["item_seen"]
    np.testing.assert_array_equal(uses_id, seen)
    np.testing.assert_allclose(fused[~seen], projected[~seen], rtol=1e-4, atol=1e-5)
    if mode == "add":
        np.testing.assert_allclose(fused[seen], id_emb[seen] + projected[seen], rtol=1e-4,
                                   atol=1e-5)
    assert np.all(np.abs(fused[seen] - projected[seen]).max(-1) > 1e-3)
    # Gathering by ids gives the same rows as the whole table.
    ids = np.array([[3, 0], [8, 5]])
    gathered, gathered_uses = fusion.apply({"params": params}, id_emb[ids], ids, side)
    np.testing.assert_allclose(gathered, fused[ids], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(gathered_uses, seen[ids])
    # Without `inductive`, unseen items mix in their ID embedding too.
    mixed, none = ItemFusion(4, mode, inductive=False).apply({"params": params}, id_emb,
                                                             None, side)
    assert none is None
    assert np.all(np.abs(np.asarray(mixed)[~seen] - projected[~seen]).max(-1) > 1e-3)
    with pytest.raises(ValueError, match="config.fusion.mode"):
        ItemFusion(4, "concat").init(jax.random.PRNGKey(0), id_emb, None, side)


def test_id_dropout_trains_the_content_path_alone_on_a_random_share():
    side = _fusion_side()
    ni = 400
    side = {"fusion_text": np.random.default_rng(1).normal(size=(ni, 6)).astype(np.float32),
            "item_seen": np.arange(ni) % 4 != 0}
    id_emb = np.random.default_rng(5).normal(size=(ni, 4)).astype(np.float32)
    fusion = ItemFusion(4, "add", id_dropout=0.3)
    params = fusion.init(jax.random.PRNGKey(0), id_emb, None, side)["params"]
    # Evaluation (deterministic): exactly the inductive rule.
    fused, uses = fusion.apply({"params": params}, id_emb, None, side)
    np.testing.assert_array_equal(uses, side["item_seen"])
    # Training: unseen items never use their ID; about 30% of seen ones drop it.
    train, uses = fusion.apply({"params": params}, id_emb, None, side, False,
                               rngs={"dropout": jax.random.PRNGKey(3)})
    uses = np.asarray(uses)
    assert not uses[~side["item_seen"]].any()
    dropped = 1 - uses[side["item_seen"]].mean()
    assert 0.22 < dropped < 0.38, dropped
    projected = _projected(params, side["fusion_text"])
    np.testing.assert_allclose(np.asarray(train)[~uses], projected[~uses], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(train)[uses], np.asarray(fused)[uses], rtol=1e-5)
    # A different step key drops a different share.
    _, other = fusion.apply({"params": params}, id_emb, None, side, False,
                            rngs={"dropout": jax.random.PRNGKey(4)})
    assert (np.asarray(other) != uses).any()


def test_kg_content_path_scores_an_unseen_item_from_shared_entities():
    from rec_jax.models.kg import KGItemEncoder
    # Items 0 and 1 share entity 0 (same relation); item 2 shares nothing; item 3 has none.
    entity = np.array([[0, 1], [0, -1], [2, -1], [-1, -1]], np.int32)
    relation = np.array([[0, 1], [0, -1], [1, -1], [-1, -1]], np.int32)
    side = {"item_kg_entity": entity, "item_kg_relation": relation,
            "item_seen": np.array([True, False, True, True])}
    enc = KGItemEncoder(3, 2, 4)
    params = enc.init(jax.random.PRNGKey(0), entity, relation)["params"]
    table = np.asarray(params["entity_embedding"])
    weight = np.asarray(params["relation_weight"])
    out = np.asarray(enc.apply({"params": params}, entity, relation))
    np.testing.assert_allclose(out[0], (weight[0] * table[0] + weight[1] * table[1]) / np.sqrt(2),
                               rtol=1e-5)
    np.testing.assert_allclose(out[1], weight[0] * table[0], rtol=1e-5)
    np.testing.assert_array_equal(out[3], 0.0)  # no entity: zero vector
    # In a fusion layer, the unseen item 1 is its KG vector alone: entity 0's
    # embedding, trained through item 0.
    id_emb = np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32)
    fusion = ItemFusion(4, "add", content="kg", kg_sizes=(3, 2))
    fparams = fusion.init(jax.random.PRNGKey(0), id_emb, None, side)["params"]
    fused, _ = fusion.apply({"params": fparams}, id_emb, None, side)
    kg_out = KGItemEncoder(3, 2, 4).apply({"params": fparams["kg"]}, entity, relation)
    np.testing.assert_allclose(np.asarray(fused)[1], np.asarray(kg_out)[1], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(fused)[0], id_emb[0] + np.asarray(kg_out)[0], rtol=1e-5)
    assert "text_proj" not in fparams
    with pytest.raises(ValueError, match="content"):
        ItemFusion(4, "add", content="image").init(jax.random.PRNGKey(0), id_emb, None, side)


def _mf_scores(module, params, side):
    return np.asarray(module.apply({"params": params}, {"user": np.arange(NU)}, side,
                                   method=students.MF.score_all))


@pytest.mark.parametrize("mode", ["add", "gated"])
def test_fused_mf_scores_cold_items_from_their_teacher_vectors(mode):
    side = _fusion_side()
    cold = np.flatnonzero(~side["item_seen"])
    batch = {"user": np.zeros(2, np.int32), "item": np.zeros(2, np.int32),
             "negatives": np.zeros((2, 1), np.int32)}
    id_only = students.MF(NU, NI, 4)
    fused = students.MF(NU, NI, 4, fusion=mode)
    p_id = id_only.init(jax.random.PRNGKey(0), batch, side)["params"]
    p_fused = fused.init(jax.random.PRNGKey(0), batch, side)["params"]
    # Give items 3 and 8 (both cold) the same teacher vector.
    twins = dict(side, fusion_text=side["fusion_text"].copy())
    twins["fusion_text"][8] = twins["fusion_text"][3]

    # ID-only: a cold item's score is its untouched random embedding; the teacher
    # vector plays no part, so two cold items with the same text score arbitrarily.
    s_id = _mf_scores(id_only, p_id, twins)
    emb = np.asarray(p_id["item_embed"]["embedding"])
    user = np.asarray(p_id["user_embed"]["embedding"])
    np.testing.assert_allclose(s_id[:, cold], user @ emb[cold].T, rtol=1e-5, atol=1e-6)
    assert np.abs(s_id[:, 3] - s_id[:, 8]).max() > 1e-4
    other_text = dict(twins, fusion_text=twins["fusion_text"] + 1.0)
    np.testing.assert_array_equal(_mf_scores(id_only, p_id, other_text), s_id)

    # Fused: cold items are scored from the teacher vector alone.
    s_f = _mf_scores(fused, p_fused, twins)
    np.testing.assert_allclose(s_f[:, 3], s_f[:, 8], rtol=1e-5, atol=1e-6)
    changed = dict(twins, fusion_text=twins["fusion_text"].copy())
    changed["fusion_text"][3] = -changed["fusion_text"][3] + 0.5
    s_changed = _mf_scores(fused, p_fused, changed)
    assert np.abs(s_changed[:, 3] - s_f[:, 3]).max() > 1e-4
    np.testing.assert_allclose(s_changed[:, 8], s_f[:, 8], rtol=1e-6)  # others untouched
    # ... and neither their ID embedding nor their bias matters (never trained).
    p_moved = jax.tree.map(lambda x: x, p_fused)
    p_moved["item_embed"] = {"embedding": p_fused["item_embed"]["embedding"] + 3.0}
    p_moved["item_bias"] = p_fused["item_bias"] + 2.0
    s_moved = _mf_scores(fused, p_moved, twins)
    np.testing.assert_allclose(s_moved[:, cold], s_f[:, cold], rtol=1e-6)
    warm = np.flatnonzero(side["item_seen"])
    assert np.abs(s_moved[:, warm] - s_f[:, warm]).min() > 1e-3


def test_fused_deepfm_and_sasrec_item_vectors_for_cold_items():
    side = _fusion_side()
    vocab = (("item_year", 3), ("user_age", 1), ("user_gender", 1), ("user_occupation", 1))
    deepfm = students.DeepFM(NU, NI, vocab, 19, 4, (8,), fusion="gated")
    # Initialised through the item field alone: only its tables are created.
    params = deepfm.init(jax.random.PRNGKey(0), np.arange(NI), side,
                         method=students.DeepFM.item_id_vectors)["params"]
    vecs = np.asarray(deepfm.apply({"params": params}, np.arange(NI), side,
                                   method=students.DeepFM.item_id_vectors))
    projected = _projected(params["fuse"], side["fusion_text"])
    cold = ~side["item_seen"]
    np.testing.assert_allclose(vecs[cold], projected[cold], rtol=1e-4, atol=1e-5)
    assert np.all(np.abs(vecs[~cold] - projected[~cold]).max(-1) > 1e-4)

    sasrec = students.SASRec(NI, 4, max_len=3, num_layers=1, num_heads=1, fusion="add")
    params = sasrec.init(jax.random.PRNGKey(0), side,
                         method=students.SASRec.item_vectors)["params"]
    table = np.asarray(sasrec.apply({"params": params}, side,
                                    method=students.SASRec.item_vectors))
    projected = _projected(params["fuse"], side["fusion_text"])
    np.testing.assert_allclose(table[cold], projected[cold], rtol=1e-4, atol=1e-5)
    emb = np.asarray(params["item_embed"]["embedding"])
    np.testing.assert_allclose(table[~cold], emb[~cold] + projected[~cold], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------
# Sharing the teacher's text projection (config.transfer.share).
# ---------------------------------------------------------------------------

DTEXT = 10  # pooled BERT text width


def _teacher_params(seed=0):
    """A teacher's params as params.msgpack holds them (only item_text_proj is read)."""
    rng = np.random.default_rng(seed)
    f32 = lambda *shape: rng.normal(size=shape).astype(np.float32)
    return {"item_text_proj": {"layers_0": {"scale": f32(DTEXT), "bias": f32(DTEXT)},
                               "layers_1": {"kernel": f32(DTEXT, DT), "bias": f32(DT)}},
            "item_id": {"embedding": f32(NI, DT)}}


def _share_config(share):
    config = common.base_config()
    config.transfer.share = share
    config.fusion.source = "text"
    config.teacher.dim = DT
    return config


def _text_side(seed=0):
    return dict(_fusion_side(seed), fusion_text=np.random.default_rng(seed + 1).normal(
        size=(NI, DTEXT)).astype(np.float32))


def _fused_student(family, config):
    """(module, init fn) of a small fused student built from the run config."""
    kw = recipes.module_args(ModelName.parse(f"{family}_fusion"), config)
    side = _text_side()
    if family == "mf":
        module = students.MF(NU, NI, 4, **kw)
        batch = {"user": np.zeros(2, np.int32), "item": np.zeros(2, np.int32),
                 "negatives": np.zeros((2, 1), np.int32)}
        return module, lambda rng: module.init(rng, batch, side)["params"]
    if family == "sasrec":
        module = students.SASRec(NI, 4, max_len=3, num_layers=1, num_heads=1, **kw)
        return module, lambda rng: module.init(rng, side, method=students.SASRec.item_vectors)[
            "params"]
    vocab = (("item_year", 3), ("user_age", 1), ("user_gender", 1), ("user_occupation", 1))
    module = students.DeepFM(NU, NI, vocab, 19, 4, (8,), **kw)
    return module, lambda rng: module.init(rng, np.arange(NI), side,
                                           method=students.DeepFM.item_id_vectors)["params"]


def _spec(init):
    return ModelSpec(name="s", init=init, loss_fn=None, source=None, score_fn=None,
                     make_query=None)


@pytest.mark.parametrize("family", ["mf", "sasrec", "deepfm"])
def test_shared_text_proj_starts_as_the_teachers(family):
    teacher = _teacher_params()
    _, init = _fused_student(family, _share_config("text_proj"))
    spec = transfer.with_shared_text(_spec(init), "text_proj", teacher)
    params = spec.init(jax.random.PRNGKey(0))
    fuse, source = params["fuse"], teacher["item_text_proj"]
    assert set(fuse) >= {"shared_norm", "shared_proj", "text_proj"} and "text_norm" not in fuse
    for key in ("scale", "bias"):
        np.testing.assert_array_equal(fuse["shared_norm"][key], source["layers_0"][key])
    for key in ("kernel", "bias"):
        np.testing.assert_array_equal(fuse["shared_proj"][key], source["layers_1"][key])
    assert fuse["text_proj"]["kernel"].shape == (DT, 4)  # the student's own map to its size
    assert spec.label_fn is None  # trainable: one optimizer group, as before
    if family == "mf":  # a cold item's vector: the student's map of the teacher's projection
        module, side = _fused_student(family, _share_config("text_proj"))[0], _text_side()
        teacher_out = _projected({"text_norm": fuse["shared_norm"],
                                  "text_proj": fuse["shared_proj"]}, side["fusion_text"])
        expected = teacher_out @ np.asarray(fuse["text_proj"]["kernel"]) + np.asarray(
            fuse["text_proj"]["bias"])
        cold = ~side["item_seen"]
        vecs = np.asarray(module.apply({"params": params}, side, method=students.MF.item_vectors))
        np.testing.assert_allclose(vecs[cold], expected[cold], rtol=1e-4, atol=1e-5)
    # Everything else is the student's own init; distillation specs share into "student".
    own = init(jax.random.PRNGKey(0))
    np.testing.assert_array_equal(params["item_embed"]["embedding"],
                                  own["item_embed"]["embedding"])
    kd_spec = transfer.with_shared_text(
        _spec(lambda rng: {"student": init(rng), "kd": {"w": jnp.ones(2)}}), "text_proj", teacher)
    kd_params = kd_spec.init(jax.random.PRNGKey(0))
    np.testing.assert_array_equal(kd_params["student"]["fuse"]["shared_proj"]["kernel"],
                                  source["layers_1"]["kernel"])
    # A teacher whose text path is damped (profile tower) hands over the damped map.
    scaled = transfer.with_shared_text(_spec(init), "text_proj", teacher, 0.25).init(
        jax.random.PRNGKey(0))["fuse"]
    for key in ("kernel", "bias"):
        np.testing.assert_allclose(scaled["shared_proj"][key],
                                   0.25 * np.asarray(source["layers_1"][key]), rtol=1e-6)
        np.testing.assert_array_equal(scaled["shared_norm"]["scale" if key == "kernel" else key],
                                      source["layers_0"]["scale" if key == "kernel" else key])
    np.testing.assert_array_equal(kd_params["kd"]["w"], np.ones(2))


@pytest.mark.parametrize("share", ["text_proj", "text_proj_frozen"])
def test_frozen_shared_text_proj_never_moves(share):
    module, init = _fused_student("mf", _share_config(share))
    spec = transfer.with_shared_text(_spec(init), share, _teacher_params())
    params = spec.init(jax.random.PRNGKey(0))
    side = _text_side()
    weights = jnp.asarray(np.random.default_rng(7).normal(size=(NI, 4)), jnp.float32)

    def loss(p):
        scores = module.apply({"params": p}, {"user": np.arange(NU)}, side,
                              method=students.MF.score_all)
        items = module.apply({"params": p}, side, method=students.MF.item_vectors)
        return jnp.square(scores).mean() + (items * weights).sum()

    # Weight decay too: a frozen group gets no update of any kind.
    tx = optim.make_optimizer(common.optim_section(name="adamw", lr=0.1, weight_decay=0.1), 100,
                              params, spec.label_fn, spec.freeze_steps)
    state = tx.init(params)
    new = params
    for _ in range(3):
        grads = jax.grad(loss)(new)
        for layer in ("shared_norm", "shared_proj"):
            assert all(np.abs(g).max() > 0 for g in jax.tree.leaves(grads["fuse"][layer]))
        updates, state = tx.update(grads, state, new)
        new = optax.apply_updates(new, updates)

    def moved(*path):
        a, b = params, new
        for k in path:
            a, b = a[k], b[k]
        return bool(np.any(np.asarray(a) != np.asarray(b)))

    shared = [moved("fuse", "shared_norm", "scale"), moved("fuse", "shared_norm", "bias"),
              moved("fuse", "shared_proj", "kernel"), moved("fuse", "shared_proj", "bias")]
    assert shared == [share == "text_proj"] * 4
    assert moved("fuse", "text_proj", "kernel") and moved("item_embed", "embedding")
    assert moved("user_embed", "embedding")


def test_frozen_share_keeps_the_transfer_groups():
    """Sharing composes with the transferred tables' warm-up label."""
    _, init = _fused_student("mf", _share_config("text_proj_frozen"))
    rng = np.random.default_rng(8)
    spec = transfer.with_transfer(_spec(init), "mf",
                                  ConfigDict({"init": "teacher_pca", "freeze_steps": 2}),
                                  rng.normal(size=(NI, 6)), rng.normal(size=(NU, 6)))
    spec = transfer.with_shared_text(spec, "text_proj_frozen", _teacher_params())
    paths = [("item_embed", "embedding"), ("fuse", "shared_norm", "scale"),
             ("student", "fuse", "shared_proj", "kernel"), ("fuse", "text_proj", "kernel")]
    assert [spec.label_fn(p) for p in paths] == ["transferred", "frozen", "frozen", "rest"]
    assert spec.freeze_steps == {"transferred": 2}


def test_share_none_keeps_the_old_student():
    config = common.base_config()
    assert config.transfer.share == "none"
    assert "shared_text_dim" not in recipes.module_args(ModelName.parse("mf_fusion"), config)
    _, init = _fused_student("mf", config)
    params = init(jax.random.PRNGKey(0))
    old = students.MF(NU, NI, 4, fusion="add").init(
        jax.random.PRNGKey(0), {"user": np.zeros(2, np.int32), "item": np.zeros(2, np.int32),
                                "negatives": np.zeros((2, 1), np.int32)}, _text_side())["params"]
    assert jax.tree.structure(params) == jax.tree.structure(old)
    assert set(params["fuse"]) == {"text_norm", "text_proj"}
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(old)):
        np.testing.assert_array_equal(a, b)
    spec = _spec(init)
    assert transfer.with_shared_text(spec, "none", {}) is spec


def test_share_errors():
    config = _share_config("bogus")
    with pytest.raises(ValueError, match=r"config.transfer.share='bogus'.*text_proj_frozen"):
        recipes.module_args(ModelName.parse("mf_fusion"), config)
    with pytest.raises(ValueError, match="config.transfer.share"):
        transfer.with_shared_text(_spec(None), "copy", _teacher_params())
    config.transfer.share = "text_proj"
    # Models without a fusion path ignore the key (one config serves the whole run).
    for name in ("deepfm", "sasrec_kd", "mf_kd_transfer"):
        assert "shared_text_dim" not in recipes.module_args(ModelName.parse(name), config)
    config.fusion.source = "teacher"
    with pytest.raises(ValueError, match="config.fusion.source='text'"):
        recipes.module_args(ModelName.parse("mf_fusion"), config)
    config.fusion.source = "text"
    config.teacher.freeze = "top:1"
    with pytest.raises(ValueError, match="config.teacher.freeze='encoder'"):
        recipes.module_args(ModelName.parse("mf_fusion"), config)
    # A teacher that does not fit the student's shared layers, or has no text projection.
    _, init = _fused_student("mf", _share_config("text_proj"))
    wide = _teacher_params()
    wide["item_text_proj"]["layers_1"] = {"kernel": np.ones((DTEXT, DT + 1), np.float32),
                                          "bias": np.ones(DT + 1, np.float32)}
    with pytest.raises(ValueError, match=r"layers_1/(bias|kernel)"):
        transfer.with_shared_text(_spec(init), "text_proj", wide).init(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="use_text"):
        transfer.share_text_proj(init(jax.random.PRNGKey(0)), {"item_id": {}})
