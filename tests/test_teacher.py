"""The BERT teacher (rec_jax/models/teacher.py): freezing strategies, the
partially frozen text tower against the real MiniLM, text templates, output
shapes, ID switches, inductive cold items and optimizer groups.

Model-shape tests use a tiny Teacher on random side tables; only the text
tower tests load the real MiniLM-L6 (a few item sentences, 16 tokens).
"""

from __future__ import annotations

import dataclasses
import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import common
from rec_jax import recipes
from rec_jax.data import text as text_lib
from rec_jax.models import bert as bert_lib
from rec_jax.models import teacher as teacher_lib
from rec_jax.recipes import text_tables
from rec_jax.train import optim

TEXT_LEN = 16

# ---------------------------------------------------------------------------
# Freezing strategies.
# ---------------------------------------------------------------------------


def test_parse_freeze():
    assert teacher_lib.parse_freeze("encoder", 6) is None
    assert teacher_lib.parse_freeze("none", 6) == 0
    assert teacher_lib.parse_freeze("top:2", 6) == 4
    assert teacher_lib.parse_freeze("top:6", 6) == 0
    assert teacher_lib.parse_freeze("top:1", 12) == 11
    for bad in ("top:0", "top:7", "top:x", "top:", "all", "Encoder", ""):
        with pytest.raises(ValueError, match=r"config\.teacher\.freeze"):
            teacher_lib.parse_freeze(bad, 6)


# ---------------------------------------------------------------------------
# Text templates.
# ---------------------------------------------------------------------------


def test_text_templates_on_ml100k(ml100k):
    items, users = text_lib.item_texts(ml100k), text_lib.user_texts(ml100k)
    assert len(items) == ml100k.num_items and len(users) == ml100k.num_users
    toy_story = int(np.flatnonzero(ml100k.item_ids == "1")[0])
    assert items[toy_story] == "Toy Story (1995). Genres: Animation, Children's, Comedy."
    user_1 = int(np.flatnonzero(ml100k.user_ids == "1")[0])
    assert users[user_1] == "A 24 year old man, occupation: technician."
    user_2 = int(np.flatnonzero(ml100k.user_ids == "2")[0])
    assert users[user_2] == "A 53 year old woman, occupation: other."
    # ml-100k has one item with unknown title/year/genres ("unknown"): no empty genre list.
    assert all(", ." not in t and "Genres: ." not in t for t in items)


# ---------------------------------------------------------------------------
# The text tower with the real MiniLM.
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    """(model, variables, tokenizer) of MiniLM-L6-H384, and a few item sentences."""
    model, variables, tokenizer = bert_lib.load_pretrained()
    texts = ["Toy Story (1995). Genres: Animation, Children's, Comedy.",
             "GoldenEye (1995). Genres: Action, Adventure, Thriller.",
             "Heat (1995).",
             "A 24 year old man, occupation: technician."]
    tokens = text_lib.tokenize(tokenizer, texts, TEXT_LEN)
    full = model.apply(variables, tokens["input_ids"], tokens["attention_mask"],
                       tokens["token_type_ids"])["last_hidden_state"]
    pooled = np.asarray(bert_lib.mean_pool(full, tokens["attention_mask"]))
    return model, variables, texts, tokens, pooled


def _tower(settings, first_layer, inputs):
    """A text tower initialised randomly, then loaded with pretrained weights."""
    tower = teacher_lib.TextTower(settings, first_layer)
    random_params = tower.init(jax.random.PRNGKey(0), inputs, True)["params"]
    # load_text_tower works on the teacher's tree, where the tower sits under "text".
    loaded = teacher_lib.load_text_tower({"text": random_params, "other": {"w": jnp.ones(2)}},
                                         None)
    assert np.all(np.asarray(loaded["other"]["w"]) == 1)  # the rest is left alone
    return tower, random_params, loaded["text"]


def test_top_k_tower_on_cached_hidden_states_reproduces_bert(minilm, tmp_path):
    model, _, texts, _, pooled = minilm
    settings = model.settings
    n, k = settings.num_layers, 2
    first = teacher_lib.parse_freeze(f"top:{k}", n)
    assert first == n - k
    cached = text_tables.encode_cached(texts, None, TEXT_LEN, first, str(tmp_path), pooled=False)
    assert cached["hidden"].shape == (len(texts), TEXT_LEN, settings.hidden_size)
    inputs = {"hidden": cached["hidden"], "attention_mask": cached["attention_mask"]}
    tower, random_params, params = _tower(settings, first, inputs)
    # The tower owns exactly the top K layers (no embeddings, no lower layers).
    assert set(params["bert"]) == {f"layer_{i}" for i in range(first, n)}
    out = np.asarray(tower.apply({"params": params}, inputs, True))
    np.testing.assert_allclose(out, pooled, atol=1e-4)
    # Not a coincidence: the randomly initialised tower is far off.
    assert np.abs(np.asarray(tower.apply({"params": random_params}, inputs, True))
                  - pooled).max() > 1e-2
    # The encoder's own pooled cache (the `encoder` strategy) gives the same vectors.
    final = text_tables.encode_cached(texts, None, TEXT_LEN, n, str(tmp_path), pooled=True)
    np.testing.assert_allclose(final["vectors"], pooled, atol=1e-4)


def test_none_tower_from_tokens_reproduces_bert(minilm):
    model, _, _, tokens, pooled = minilm
    tower, _, params = _tower(model.settings, 0, tokens)
    assert "embeddings" in params["bert"] and "layer_0" in params["bert"]
    np.testing.assert_allclose(np.asarray(tower.apply({"params": params}, tokens, True)),
                               pooled, atol=1e-4)


# ---------------------------------------------------------------------------
# The teacher module on random side tables.
# ---------------------------------------------------------------------------

U, I, G, D, L, H = 5, 9, 19, 8, 4, 12  # users, items, genres, dim, history, text width


def _side(seed=0):
    rng = np.random.default_rng(seed)
    seen = np.ones(I, bool)
    seen[[2, 7]] = False
    return {"item_text": rng.normal(size=(I, H)).astype(np.float32),
            "user_text": rng.normal(size=(U, H)).astype(np.float32),
            "item_seen": seen}


def _batch():
    inputs = np.array([[-1, -1, 0, 1], [3, 4, 5, 6], [-1, 8, 0, 3]], np.int32)
    targets = np.array([[-1, -1, 1, 2], [4, 5, 6, 8], [-1, 0, 3, 1]], np.int32)
    return {"user": np.array([0, 3, 4], np.int32), "inputs": inputs, "targets": targets}


def _teacher(**kw):
    args = {"num_users": U, "num_items": I, "num_genres": G, "dim": D, "max_len": L,
            "num_layers": 1, "num_heads": 2, "dropout": 0.2}
    return teacher_lib.Teacher(**{**args, **kw})


def test_teacher_output_shapes():
    module, side, batch = _teacher(), _side(), _batch()
    query = {"user": batch["user"], "inputs": batch["inputs"]}
    sampled = jnp.array([0, 2, 4, 6, 8])

    @jax.jit  # one compilation for every entry point (eager Linen is slow to warm up)
    def run(key):
        params = module.init(key, batch, side)["params"]
        apply = functools.partial(module.apply, {"params": params})
        T = teacher_lib.Teacher
        return {
            "out": apply(batch, side),
            "sampled": apply(batch, side, sampled=sampled),
            "dropout": apply(batch, side, deterministic=False, rngs={"dropout": key}),
            "users": apply(query, side, method=T.outputs_for_users),
            "scores": apply(query, side, method=T.score_all),
            "ctr": apply(query, jnp.array([1, 2, 3]), side, method=T.ctr_for_pairs),
        }

    r = run(jax.random.PRNGKey(0))
    out, o, b = r["out"], r["users"], batch["user"].shape[0]
    assert out["logits"].shape == (b, L, I) and out["logits"].dtype == jnp.float32
    assert out["ctr_logit"].shape == (b, L)
    assert out["genre_logits"].shape == (I, G)
    assert out["user_emb"].shape == (b, D) and out["item_emb"].shape == (I, D)
    assert r["sampled"]["logits"].shape == (b, L, 1 + 5)
    # Column 0 of the sampled softmax is the target's logit, as in the full softmax.
    t = np.where(batch["targets"] >= 0, batch["targets"], 0)
    np.testing.assert_allclose(
        r["sampled"]["logits"][..., 0],
        np.take_along_axis(np.asarray(out["logits"]), t[..., None], -1)[..., 0],
        rtol=1e-5, atol=1e-6)
    assert o["user_vec"].shape == (b, D) and o["item_vec"].shape == (I, D)
    assert o["item_bias"].shape == (I,) and o["logits"].shape == (b, I)
    assert o["genre_prob"].shape == (I, G)
    np.testing.assert_allclose(r["scores"], o["logits"], rtol=1e-5, atol=1e-6)
    # The last position of the training forward is the user vector.
    np.testing.assert_allclose(out["user_emb"], o["user_vec"], rtol=1e-5, atol=1e-6)
    assert r["ctr"].shape == (b,)
    # Dropout is on in training mode and off by default.
    assert np.abs(np.asarray(r["dropout"]["logits"]) - np.asarray(out["logits"])).max() > 1e-4


def test_profile_teacher_shapes_and_bag_order():
    """The profile tower: one state per user shared by all held-out targets, a
    sampled softmax consistent with the full one, and a bag whose order and
    padding layout do not matter."""
    module, side, batch = _teacher(user_tower="profile"), _side(), _batch()
    T = teacher_lib.Teacher
    # The same bags, reversed and with the padding moved to the other side.
    shuffled = np.full_like(batch["inputs"], -1)
    for k, row in enumerate(batch["inputs"]):
        items = row[row >= 0][::-1]
        shuffled[k, :len(items)] = items
    sampled = jnp.array([0, 2, 4, 6, 8])

    @jax.jit
    def run(key):
        params = module.init(key, batch, side)["params"]
        apply = functools.partial(module.apply, {"params": params})
        return {
            "params": params,
            "out": apply(batch, side),
            "sampled": apply(batch, side, sampled=sampled),
            "users": apply({"user": batch["user"], "inputs": batch["inputs"]}, side,
                           method=T.outputs_for_users),
            "shuffled": apply({"user": batch["user"], "inputs": shuffled}, side,
                              method=T.score_all),
        }

    r = run(jax.random.PRNGKey(0))
    out, b = r["out"], batch["user"].shape[0]
    assert "bag_item_id" in r["params"] and "position" not in r["params"]["history"]
    assert out["logits"].shape == (b, 1, I)
    assert out["ctr_logit"].shape == batch["targets"].shape
    assert r["sampled"]["logits"].shape == batch["targets"].shape + (1 + 5,)
    t = np.where(batch["targets"] >= 0, batch["targets"], 0)
    np.testing.assert_allclose(r["sampled"]["logits"][..., 0],
                               np.take_along_axis(np.asarray(out["logits"][:, 0]), t, -1),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["user_emb"], r["users"]["user_vec"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r["shuffled"], r["users"]["logits"], rtol=1e-4, atol=1e-5)
    # A different bag is a different user.
    assert np.abs(np.asarray(r["users"]["user_vec"][0] - r["users"]["user_vec"][1])).max() > 1e-3
    with pytest.raises(ValueError, match="user_tower"):
        _param_names(_teacher(user_tower="bag"))


def test_recipe_resolves_the_user_tower_by_split(ml100k_ratio):
    cfg = common.teacher_section()
    assert cfg.user_tower == "auto"
    assert recipes.teacher_user_tower(cfg, ml100k_ratio) == "profile"
    assert recipes.teacher_history_len(cfg, ml100k_ratio) == cfg.profile_len
    profile = recipes.teacher_module(cfg, ml100k_ratio)
    assert (profile.num_layers, profile.dropout, profile.text_scale) == (
        cfg.profile_layers, cfg.profile_dropout, cfg.profile_text_scale)
    def split(name):
        return dataclasses.replace(ml100k_ratio,
                                   split=dataclasses.replace(ml100k_ratio.split, name=name))
    assert recipes.teacher_user_tower(cfg, split("cold_items")) == "profile"
    assert recipes.teacher_user_tower(cfg, split("loo_time")) == "causal"
    assert recipes.teacher_history_len(cfg, split("loo_time")) == cfg.max_len
    cfg.user_tower = "causal"
    causal = recipes.teacher_module(cfg, ml100k_ratio)
    assert (causal.user_tower, causal.num_layers, causal.dropout, causal.text_scale) == (
        "causal", cfg.num_layers, cfg.dropout, 1.0)
    cfg.user_tower = "bag"
    with pytest.raises(ValueError, match="user_tower='bag'"):
        recipes.teacher_user_tower(cfg, ml100k_ratio)


def _param_names(module):
    """Top-level param names, from shapes alone (no init is run)."""
    return set(jax.eval_shape(module.init, jax.random.PRNGKey(0), _batch(), _side())["params"])


def test_textonly_teacher_has_no_id_params():
    assert {"item_id", "user_id", "item_bias"} <= _param_names(_teacher())
    text_only = _param_names(_teacher(use_ids=False))
    assert not {"item_id", "user_id", "item_bias"} & text_only
    assert {"item_text_proj", "user_text_proj", "history", "genre_head"} <= text_only
    no_user_id = _param_names(_teacher(user_ids=False))
    assert "user_id" not in no_user_id and "item_id" in no_user_id
    with pytest.raises(ValueError, match="text, IDs or both"):
        _param_names(_teacher(use_ids=False, use_text=False))


def test_recipe_textonly_name_drops_ids(ml100k_ratio):
    cfg = common.teacher_section()
    assert recipes.teacher_module(cfg, ml100k_ratio, "teacher").use_ids
    assert not recipes.teacher_module(cfg, ml100k_ratio, "teacher_textonly").use_ids


def test_unseen_items_get_no_id_contribution():
    module, side = _teacher(), _side()
    T = teacher_lib.Teacher
    # The item tower alone (item text projection, item IDs, item bias).
    params = module.init(jax.random.PRNGKey(0), side, method=T.item_vectors)["params"]
    params = dict(params, item_bias=jnp.arange(I, dtype=jnp.float32) + 1.0)

    @jax.jit
    def tower(p):
        return (module.apply({"params": p}, side, method=T.item_vectors),
                module.apply({"params": p}, side["item_text"],
                             method=lambda m, t: m.item_text_proj(t)),
                module.apply({"params": p}, side, method=T.bias))

    base, text_only, bias = map(np.asarray, tower(params))
    unseen, seen = ~side["item_seen"], side["item_seen"]
    # An unseen item is its projected text alone; a seen one adds its ID embedding.
    np.testing.assert_allclose(base[unseen], text_only[unseen], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(base[seen], text_only[seen] + np.asarray(
        params["item_id"]["embedding"])[seen], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(bias, np.where(seen, np.arange(I) + 1.0, 0.0))
    # Moving every ID embedding moves seen items only.
    moved = dict(params, item_id={"embedding": params["item_id"]["embedding"] + 1.0})
    after = np.asarray(tower(moved)[0])
    np.testing.assert_array_equal(after[unseen], base[unseen])
    assert np.all(np.abs(after[seen] - base[seen]) > 0.5)
    # text_scale multiplies the text path only (the profile tower's setting).
    scaled = np.asarray(jax.jit(lambda p: _teacher(text_scale=0.25).apply(
        {"params": p}, side, method=T.item_vectors))(params))
    np.testing.assert_allclose(scaled[unseen], 0.25 * text_only[unseen], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scaled[seen], 0.25 * text_only[seen] + np.asarray(
        params["item_id"]["embedding"])[seen], rtol=1e-5, atol=1e-6)


def test_text_tower_params_form_the_encoder_optimizer_group(ml100k_ratio):
    """the teacher recipe's label_fn puts the fine-tuned BERT layers in group "encoder"; with
    Adam the first update is -lr·group_lr·sign(g), so the groups' LRs show."""
    config = common.base_config()
    config.teacher.freeze = "top:1"
    parts = recipes.model_spec("teacher", config, ml100k_ratio, {})
    assert parts.label_fn is not None
    # A teacher with a (tiny) top:1 tower, on cached hidden states of random text.
    settings = bert_lib.BertSettings(vocab_size=30, hidden_size=H, num_layers=2, num_heads=2,
                                     intermediate_size=16, max_position_embeddings=8)
    side = _side()
    rng = np.random.default_rng(0)
    for kind, n in (("item", I), ("user", U)):
        side[f"{kind}_hidden"] = rng.normal(size=(n, 3, H)).astype(np.float32)
        side[f"{kind}_tokens"] = {"attention_mask": np.ones((n, 3), np.int32)}
    module = _teacher(bert_settings=settings, text_first_layer=1)
    # Only the tree's paths and shapes matter here: no need to run the init.
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), _batch(), side)["params"]
    params = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
    flat = flax.traverse_util.flatten_dict(params)
    labels = {path: parts.label_fn(path) for path in flat}
    assert {p for p, g in labels.items() if g == "encoder"} == {p for p in flat
                                                                if p[:2] == ("text", "bert")}
    assert set(labels.values()) == {"encoder", "heads"}

    cfg = config.teacher.optim
    assert cfg.group_lr.encoder == 0.1 and cfg.group_lr.heads == 1.0
    tx = optim.make_optimizer(cfg, 100, params, parts.label_fn)
    grads = jax.tree.map(jnp.ones_like, params)
    # Zero params: no weight decay in the update. (jit: one compilation, not one per leaf.)
    updates = jax.jit(lambda p, g: tx.update(g, tx.init(p), p)[0])(params, grads)
    for path, u in flax.traverse_util.flatten_dict(updates).items():
        scale = cfg.lr * (0.1 if labels[path] == "encoder" else 1.0)
        np.testing.assert_allclose(u, -scale, rtol=1e-4, err_msg="/".join(path))
    # The `encoder` strategy has no text params, hence no groups.
    config.teacher.freeze = "encoder"
    assert recipes.model_spec("teacher", config, ml100k_ratio, {}).label_fn is None


def test_a_top1_step_changes_only_the_top_layer_and_the_heads():
    """freeze=top:1 over cached hidden states: the layers below are not params at all
    (their outputs are side tables that stay as they are), and one Adam step moves
    the top layer and every head."""
    settings = bert_lib.BertSettings(vocab_size=30, hidden_size=H, num_layers=2, num_heads=2,
                                     intermediate_size=16, max_position_embeddings=8)
    side = _side()
    rng = np.random.default_rng(0)
    for kind, n in (("item", I), ("user", U)):
        side[f"{kind}_hidden"] = rng.normal(size=(n, 3, H)).astype(np.float32)
        side[f"{kind}_tokens"] = {"attention_mask": np.ones((n, 3), np.int32)}
    cached = {k: np.array(side[f"{k}_hidden"]) for k in ("item", "user")}
    module = _teacher(bert_settings=settings, text_first_layer=1, dropout=0.0)
    params = module.init(jax.random.PRNGKey(0), _batch(), side)["params"]
    flat = flax.traverse_util.flatten_dict(params)
    bert_paths = {p for p in flat if p[:2] == ("text", "bert")}
    # Only the top layer (index 1) of the 2-layer BERT exists: no embeddings, no layer 0.
    assert bert_paths and all("1" in "/".join(p[2:4]) for p in bert_paths), sorted(bert_paths)
    assert not any("embed" in "/".join(p) for p in bert_paths)

    def loss(p):
        out = module.apply({"params": p}, _batch(), side)
        return out["logits"].mean() + out["ctr_logit"].mean() + out["genre_logits"].mean()
    tx = optim.make_optimizer(common.base_config().teacher.optim, 10, params,
                              lambda path: "encoder" if path[0] == "text" else "heads")
    updates, _ = jax.jit(tx.update)(jax.jit(jax.grad(loss))(params), tx.init(params), params)
    new = flax.traverse_util.flatten_dict(optax.apply_updates(params, updates))
    moved = {p for p in flat if not np.allclose(new[p], flat[p])}
    assert bert_paths <= moved  # the top layer trains
    for head in ("item_text_proj", "user_text_proj", "ctr_hidden", "ctr_out", "genre_head",
                 "history"):
        assert any(p[0] == head for p in moved), head
    for k in ("item", "user"):  # the cached lower-layer outputs are inputs, untouched
        np.testing.assert_array_equal(side[f"{k}_hidden"], cached[k])


def test_a_warm_start_may_leave_named_groups_at_their_own_init(tmp_path):
    """finetune_from='frozen': the frozen teacher's file has no "text" tower; that group
    keeps its (pretrained) init, every other param comes from the file, and a file
    missing any other group is refused."""
    from rec_jax.spec import ModelSpec
    init = {"heads": {"w": np.zeros((2, 3), np.float32)},
            "text": {"bert": {"k": np.full((4,), 7.0, np.float32)}}}
    spec = ModelSpec(name="teacher", init=lambda rng: init, loss_fn=None, source=None,
                     score_fn=None, make_query=None)
    path = tmp_path / "params.msgpack"
    path.write_bytes(flax.serialization.msgpack_serialize(
        {"heads": {"w": np.ones((2, 3), np.float32)}}))
    out = recipes.warm_start(spec, str(path), student_only=False, keep_missing=("text",),
                             key="config.teacher.finetune_from").init(None)
    np.testing.assert_array_equal(out["heads"]["w"], 1.0)
    np.testing.assert_array_equal(out["text"]["bert"]["k"], 7.0)
    with pytest.raises(ValueError, match=r"train.init_from=.*\[.text.\]"):
        recipes.warm_start(spec, str(path), student_only=False).init(None)


def test_length_buckets_give_the_padded_towers_output():
    """A top:K tower over distinct texts in length buckets pools to the same vectors as
    over every text padded to the full window (padding is masked everywhere)."""
    settings = bert_lib.BertSettings(vocab_size=30, hidden_size=H, num_layers=2, num_heads=2,
                                     intermediate_size=16, max_position_embeddings=40)
    rng = np.random.default_rng(3)
    texts = ["a b", "c d e", "a b", "f " * 15, "g", "c d e", "h " * 30]
    lengths = {t: len(t.split()) for t in texts}
    window = 32
    mask = np.array([[1] * min(lengths[t], window) + [0] * (window - min(lengths[t], window))
                     for t in texts], np.int32)
    distinct = {t: rng.normal(size=(window, H)).astype(np.float32) for t in set(texts)}
    hidden = np.stack([distinct[t] for t in texts])
    tower = teacher_lib.TextTower(settings, 1)
    plain = {"hidden": hidden, "attention_mask": mask}
    params = tower.init(jax.random.PRNGKey(0), plain, True)
    expected = tower.apply(params, plain, True)
    bucketed = text_tables.length_buckets(texts, hidden, mask)
    assert [b["hidden"].shape[1] for b in bucketed["buckets"]] == [8, 16, 32]
    assert sum(len(b["hidden"]) for b in bucketed["buckets"]) == 5  # distinct texts
    np.testing.assert_allclose(tower.apply(params, bucketed, True), expected, rtol=1e-5,
                               atol=1e-5)
