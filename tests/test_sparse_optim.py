"""Row-sparse tables (config.optim.sparse_tables): lazy Adam on hand-made inputs.

What is checked: the rows a step reads get Adam's update of their summed
gradient and every other row keeps its value and moments; dense leaves get
exactly optax.adam's update; the tables are found from the loss itself (row
lookups only; any other live use keeps a parameter dense); a step through
``apply_update`` gives the dense step's loss and, on the rows it read, the
dense gradient; pmap over the fake devices gives the global-batch result.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import common
from rec_jax import errors
from rec_jax.train import optim, sparse_tables
from rec_jax.train import step as step_lib

B1, B2, EPS = 0.9, 0.999, 1e-8


def _np_adam(g, m, v, t, lr):
    """Reference Adam on one array (numpy, float64): (update, m, v)."""
    m = B1 * m + (1 - B1) * g
    v = B2 * v + (1 - B2) * g * g
    m_hat, v_hat = m / (1 - B1 ** t), v / (1 - B2 ** t)
    return -lr * m_hat / (np.sqrt(v_hat) + EPS), m, v


def test_rows_read_get_adam_of_their_summed_gradient_others_stay():
    lr = 0.1
    tx = sparse_tables.row_sparse_adam(lr)
    table = np.arange(12, dtype=np.float32).reshape(6, 2)
    params = {"table": jnp.asarray(table)}
    state = tx.init(params)
    # Step 1: rows 3 (read twice) and 1.
    ids = jnp.asarray([3, 1, 3], jnp.int32)
    grads = jnp.asarray([[1.0, -2.0], [0.5, 0.5], [3.0, 1.0]], jnp.float32)
    params, state = tx.update_rows({}, {0: (ids, grads)}, state, params)
    # Step 2: row 1 again and row 5.
    ids2 = jnp.asarray([5, 1], jnp.int32)
    grads2 = jnp.asarray([[2.0, 0.0], [-1.0, 4.0]], jnp.float32)
    params, state = tx.update_rows({}, {0: (ids2, grads2)}, state, params)

    want, m, v = table.astype(np.float64), np.zeros((6, 2)), np.zeros((6, 2))
    for t, rows in ((1, {3: [1.0, -2.0] + np.asarray([3.0, 1.0]), 1: [0.5, 0.5]}),
                    (2, {5: [2.0, 0.0], 1: [-1.0, 4.0]})):
        for r, g in rows.items():
            u, m[r], v[r] = _np_adam(np.asarray(g, np.float64), m[r], v[r], t, lr)
            want[r] += u
    np.testing.assert_allclose(params["table"], want, rtol=1e-6)
    np.testing.assert_allclose(state.mu["table"], m, rtol=1e-6)
    np.testing.assert_allclose(state.nu["table"], v, rtol=1e-6)
    for r in (0, 2, 4):  # never read: value and moments exactly as they were
        np.testing.assert_array_equal(params["table"][r], table[r])
        np.testing.assert_array_equal(state.mu["table"][r], 0.0)
        np.testing.assert_array_equal(state.nu["table"][r], 0.0)
    # Row 3 was read at step 1 only: step 2 left it alone (dense Adam would
    # have moved it by its momentum).
    assert int(state.count) == 2


def test_dense_leaves_match_optax_adam():
    schedule = optax.linear_schedule(1e-2, 1e-3, 5)
    tx, ref = sparse_tables.row_sparse_adam(schedule), optax.adam(schedule)
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.standard_normal((3, 4)), jnp.float32),
              "b": jnp.asarray(rng.standard_normal(4), jnp.float32)}
    p1, s1, p2, s2 = params, tx.init(params), params, ref.init(params)
    p3, s3 = params, tx.init(params)
    for _ in range(4):
        grads = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), x.dtype), params)
        p1, s1 = tx.update_rows(dict(enumerate(jax.tree.leaves(grads))), {}, s1, p1)
        u2, s2 = ref.update(grads, s2, p2)
        p2 = optax.apply_updates(p2, u2)
        u3, s3 = tx.update(grads, s3, p3)  # the plain optax-style update: Adam too
        p3 = optax.apply_updates(p3, u3)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)  # noqa: E731
    jax.tree.map(close, p1, p2)
    jax.tree.map(close, p3, p2)


def _toy_loss(params, batch, side, frozen, rng):
    """A loss with two tables (read by lookups only), a dense weight, a dead read."""
    del side, frozen, rng
    emb, bias, w = params["emb"], params["bias"], params["w"]
    u = jnp.take(emb, batch["a"], axis=0)              # [B, d] (like nn.Embed)
    v = emb[batch["b"]]                                # [B, n, d]
    _ = emb.sum()                                      # dead: never reaches the outputs
    score = jnp.einsum("bd,bnd->bn", u @ w, v) + bias[batch["b"]]
    loss = jnp.mean(jax.nn.softplus(-score))
    n = jnp.asarray(batch["a"].shape[0], jnp.float32)
    return loss, {"loss": loss * n, "examples": n}


def _toy(rows=7, dim=3, batch_size=4, seed=0):
    rng = np.random.default_rng(seed)
    params = {"emb": jnp.asarray(rng.standard_normal((rows, dim)), jnp.float32),
              "bias": jnp.asarray(rng.standard_normal(rows), jnp.float32),
              "w": jnp.asarray(rng.standard_normal((dim, dim)), jnp.float32)}

    def batch(s):
        r = np.random.default_rng(100 + s)
        # Rows 0..rows-2 only: the last row is never read.
        return {"a": r.integers(0, rows - 1, batch_size).astype(np.int32),
                "b": r.integers(0, rows - 1, (batch_size, 2)).astype(np.int32)}
    return params, batch


def test_plan_finds_tables_from_the_loss():
    params, batch = _toy()
    closed = jax.make_jaxpr(_toy_loss)(params, batch(0), None, None, jax.random.PRNGKey(0))
    plan = sparse_tables.plan_tables(closed, params)
    assert plan.names == ("['bias']", "['emb']")  # "w" is read by a matmul: dense
    assert len(plan.lookups) == 3

    def also_dense(params, batch, side, frozen, rng):
        loss, sums = _toy_loss(params, batch, side, frozen, rng)
        loss = loss + 1e-3 * jnp.sum(params["emb"] ** 2)  # a live whole-table use
        return loss, sums
    closed = jax.make_jaxpr(also_dense)(params, batch(0), None, None, jax.random.PRNGKey(0))
    assert sparse_tables.plan_tables(closed, params).names == ("['bias']",)


def _dense_step_reference(params, batches, lr):
    """Lazy Adam from the dense gradient (numpy): rows read at a step only."""
    params = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
    m = jax.tree.map(np.zeros_like, params)
    v = jax.tree.map(np.zeros_like, params)
    read = {"emb": lambda b: np.concatenate([b["a"], b["b"].ravel()]),
            "bias": lambda b: b["b"].ravel()}
    for t, b in enumerate(batches, 1):
        f32 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
        grads = jax.grad(lambda p: _toy_loss(p, b, None, None, None)[0])(f32)
        for name in params:
            g = np.asarray(grads[name], np.float64)
            rows = np.unique(read[name](b)) if name in read else slice(None)
            u, m[name][rows], v[name][rows] = _np_adam(g[rows], m[name][rows], v[name][rows],
                                                       t, lr)
            params[name][rows] += u
    return params


def _sparse_tx(lr):
    cfg = common.optim_section(lr=lr, sparse_tables=True)
    return optim.make_optimizer(cfg, 100)


def test_step_matches_dense_loss_and_lazy_reference():
    lr = 0.05
    params, batch = _toy()
    tx = _sparse_tx(lr)
    assert isinstance(tx, sparse_tables.RowSparseAdam)
    step = jax.jit(lambda s, b: step_lib.global_train_step(s, b, None, None,
                                                           jax.random.PRNGKey(0),
                                                           loss_fn=_toy_loss, tx=tx))
    state = step_lib.init_state(params, tx)
    batches = [batch(s) for s in range(3)]
    for b in batches:
        want_loss = _toy_loss(state.params, b, None, None, None)[0]
        state, sums = step(state, b)
        np.testing.assert_allclose(sums["loss"] / sums["examples"], want_loss, rtol=1e-6)
        assert float(sums["nonfinite"]) == 0.0
    want = _dense_step_reference(params, batches, lr)
    for name in params:
        np.testing.assert_allclose(state.params[name], want[name], rtol=2e-5, atol=2e-6)
    # The last row is never read: it is exactly its initial value.
    np.testing.assert_array_equal(state.params["emb"][-1], params["emb"][-1])
    np.testing.assert_array_equal(state.params["bias"][-1], params["bias"][-1])


def test_pmap_gathers_rows_from_every_device():
    devices = jax.local_device_count()
    assert devices > 1, "conftest sets fake CPU devices"
    lr = 0.05
    params, batch = _toy(batch_size=2 * devices)
    tx = _sparse_tx(lr)
    key = jax.random.PRNGKey(0)
    p_step = step_lib.make_pmapped_step(_toy_loss, tx)
    g_step = jax.jit(lambda s, b: step_lib.global_train_step(s, b, None, None, key,
                                                             loss_fn=_toy_loss, tx=tx))
    p_state = step_lib.replicate(step_lib.init_state(params, tx))
    g_state = step_lib.init_state(params, tx)
    for s in range(2):
        b = batch(s)
        shards = jax.tree.map(lambda x: x.reshape((devices, -1) + x.shape[1:]), b)
        p_state, _ = p_step(p_state, shards, step_lib.replicate({}), step_lib.replicate(None),
                            key)
        g_state, _ = g_step(g_state, b)
    got = step_lib.unreplicate(p_state)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6),
                 got.params, jax.device_get(g_state.params))


def test_mesh_step_matches_global_step():
    from rec_jax import sharding
    from rec_jax.train import mesh as mesh_lib
    params, batch = _toy(rows=8, batch_size=8)  # 8 rows: the tables shard on "model"
    tx = _sparse_tx(0.05)
    key = jax.random.PRNGKey(0)
    mesh = sharding.make_mesh((2, 2))
    state = step_lib.init_state(params, tx)
    shardings = sharding.tree_shardings(state, mesh, 8)
    m_step = mesh_lib.make_mesh_step(_toy_loss, tx, mesh, shardings)
    g_step = jax.jit(lambda s, b: step_lib.global_train_step(s, b, None, None, key,
                                                             loss_fn=_toy_loss, tx=tx))
    m_state = jax.device_put(jax.device_get(state), shardings)
    for s in range(2):
        b = batch(s)
        m_state, _ = m_step(m_state, jax.device_put(b, sharding.batch_sharding(mesh)), None,
                            None, key)
        state, _ = g_step(state, b)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6),
                 jax.device_get(m_state.params), jax.device_get(state.params))


def test_mf_tables_are_found(ml100k_ratio):
    from rec_jax import recipes
    config = common.base_config()
    spec = recipes.model_spec("mf", config, ml100k_ratio, {})
    params = spec.init(jax.random.PRNGKey(0))
    batch = spec.source.make_batch(np.arange(8), np.random.default_rng(0))
    closed = jax.make_jaxpr(spec.loss_fn)(params, batch, {}, None, jax.random.PRNGKey(0))
    plan = sparse_tables.plan_tables(closed, params)
    assert set(plan.names) == {"['item_bias']", "['item_embed']['embedding']",
                               "['user_embed']['embedding']"}


def _table_names(name, config, data):
    from rec_jax import recipes
    from rec_jax.data import features
    side = features.side_features(data.dataset) if name == "deepfm" else {}
    spec = recipes.model_spec(name, config, data, side)
    params = spec.init(jax.random.PRNGKey(0))
    batch = spec.source.make_batch(np.arange(8), np.random.default_rng(0))
    closed = jax.make_jaxpr(spec.loss_fn)(params, batch, side, None, jax.random.PRNGKey(0))
    return set(sparse_tables.plan_tables(closed, params).names)


def test_sasrec_item_table_is_row_sparse_only_with_sampled_softmax(ml100k_ratio):
    config = common.base_config()
    # The full softmax multiplies by the whole item table: it stays dense.
    assert "['item_embed']['embedding']" not in _table_names("sasrec", config, ml100k_ratio)
    config.model.sasrec.sampled_negatives = 16
    names = _table_names("sasrec", config, ml100k_ratio)
    assert "['item_embed']['embedding']" in names
    assert all("block" not in n for n in names)  # attention weights are dense


def test_deepfm_id_tables_are_found(ml100k_ratio):
    names = _table_names("deepfm", common.base_config(), ml100k_ratio)
    assert {"['user_embed']['embedding']", "['item_embed']['embedding']",
            "['user_linear']['embedding']", "['item_linear']['embedding']"} <= names
    assert not any("mlp" in n for n in names)


@pytest.mark.parametrize("override, key", [({"name": "adagrad"}, "name"),
                                           ({"l2": 1e-4}, "l2"),
                                           ({"grad_clip": 1.0}, "grad_clip")])
def test_unsupported_settings_are_config_errors(override, key):
    cfg = common.optim_section(sparse_tables=True, **override)
    with pytest.raises(errors.ConfigError, match=f"sparse_tables.*{key}|{key}.*sparse_tables"):
        optim.make_optimizer(cfg, 10)
    with pytest.raises(errors.ConfigError, match="sparse_tables"):
        optim.make_optimizer(common.optim_section(sparse_tables=True), 10,
                             {"a": jnp.zeros(2)}, lambda path: "g")
