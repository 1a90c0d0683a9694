"""Every loss term of rec_jax/distill/objectives.py on hand-made inputs.

Expected values are written out by hand (or in numpy, term by term, from the
formulas of the distillation objective), never by calling the function under test again.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rec_jax.distill import objectives

LN2, LN3 = math.log(2.0), math.log(3.0)


def _log_sigmoid(x):
    return -np.log1p(np.exp(-np.asarray(x, np.float64)))


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


# ---------------------------------------------------------------------------
# Hard losses.
# ---------------------------------------------------------------------------


def test_bpr_loss_hand_computed():
    pos = jnp.array([2.0, 0.0])
    neg = jnp.array([[0.0, 1.0], [0.0, 0.0]])
    # -log σ(2), -log σ(1), -log σ(0), -log σ(0), averaged over all four pairs.
    expected = (math.log1p(math.exp(-2)) + math.log1p(math.exp(-1)) + 2 * LN2) / 4
    np.testing.assert_allclose(objectives.bpr_loss(pos, neg), expected, rtol=1e-6)
    # A wider margin is a smaller loss.
    assert objectives.bpr_loss(pos + 5, neg) < objectives.bpr_loss(pos, neg)


def test_softmax_ce_loss_with_mask():
    logits = jnp.array([[0.0, 0.0, 0.0],            # target 1: -log(1/3) = ln 3
                        [0.0, LN2, 0.0],            # target 1: -log(2/4) = ln 2
                        [100.0, -100.0, 0.0]])      # masked out (and padded target -1)
    targets = jnp.array([1, 1, -1])
    mask = jnp.array([True, True, False])
    np.testing.assert_allclose(objectives.softmax_ce_loss(logits, targets, mask),
                               (LN3 + LN2) / 2, rtol=1e-6)
    # Without a mask the padded row counts (target clamped to item 0: loss ~0 here).
    np.testing.assert_allclose(objectives.softmax_ce_loss(logits[:2], targets[:2]),
                               (LN3 + LN2) / 2, rtol=1e-6)
    # An all-false mask gives 0, not NaN.
    assert float(objectives.softmax_ce_loss(logits, targets, jnp.zeros(3, bool))) == 0.0


def test_sampled_softmax_ce_hand_computed_hits_and_mask():
    pos = jnp.array([0.0, 0.0, 50.0])
    neg = jnp.array([[0.0, 0.0],         # -log(1/3) = ln 3
                     [0.0, 7.0],         # the 7.0 is the target drawn again: -log(1/2) = ln 2
                     [-50.0, 80.0]])     # masked out
    hits = jnp.array([[False, False], [False, True], [False, False]])
    mask = jnp.array([True, True, False])
    np.testing.assert_allclose(objectives.sampled_softmax_ce_loss(pos, neg, hits, mask),
                               (LN3 + LN2) / 2, rtol=1e-6)
    # Without the hit flag the drawn target counts as a negative.
    np.testing.assert_allclose(objectives.sampled_softmax_ce_loss(pos[1:2], neg[1:2]),
                               math.log(2 + math.exp(7.0)), rtol=1e-6)
    # Every draw a hit: the loss is 0 with finite gradients.
    g = jax.grad(lambda p: objectives.sampled_softmax_ce_loss(p, neg[:1], jnp.ones((1, 2), bool)))(
        pos[:1])
    assert np.isfinite(np.asarray(g)).all()


def test_sampled_softmax_over_every_other_item_is_the_full_softmax():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)
    targets = jnp.array([0, 3, 5, 2])
    others = np.array([[j for j in range(6) if j != t] for t in np.asarray(targets)])
    pos = jnp.take_along_axis(logits, targets[:, None], axis=1)[:, 0]
    neg = jnp.take_along_axis(logits, jnp.asarray(others), axis=1)
    np.testing.assert_allclose(objectives.sampled_softmax_ce_loss(pos, neg),
                               objectives.softmax_ce_loss(logits, targets), rtol=1e-6)
    # Drawing the whole catalogue (targets included, flagged as hits) is the same.
    every = jnp.broadcast_to(logits[:, None, :], (4, 1, 6))[:, 0]
    hits = jnp.arange(6)[None] == targets[:, None]
    np.testing.assert_allclose(objectives.sampled_softmax_ce_loss(pos, every, hits),
                               objectives.softmax_ce_loss(logits, targets), rtol=1e-6)


def test_bce_loss_soft_labels_and_mask():
    logits = jnp.array([0.0, LN3, 7.0])  # σ = 1/2, 3/4, ~1
    labels = jnp.array([0.5, 0.25, 0.0])
    row0 = LN2  # -(½ ln ½ + ½ ln ½)
    row1 = -(0.25 * math.log(0.75) + 0.75 * math.log(0.25))
    row2 = -math.log(1 - 1 / (1 + math.exp(-7.0)))
    np.testing.assert_allclose(objectives.bce_loss(logits, labels), (row0 + row1 + row2) / 3,
                               rtol=1e-5)
    mask = jnp.array([True, True, False])
    np.testing.assert_allclose(objectives.bce_loss(logits, labels, mask), (row0 + row1) / 2,
                               rtol=1e-6)
    # The minimum over logits of a soft label y sits at σ(x) = y, not at x = ±inf.
    grad = jax.grad(lambda x: objectives.bce_loss(x, jnp.array([0.25])))(
        jnp.array([math.log(1 / 3)]))
    np.testing.assert_allclose(grad, [0.0], atol=1e-6)


# ---------------------------------------------------------------------------
# Soft KL.
# ---------------------------------------------------------------------------


def _kl_by_hand(s, t, temperature, keep=None):
    """T² · KL(softmax(t/T) ‖ softmax(s/T)) per row, in float64 numpy."""
    rows = []
    for k in range(s.shape[0]):
        cols = np.arange(s.shape[1]) if keep is None else np.flatnonzero(keep[k])
        lt = _log_softmax(t[k, cols] / temperature)
        ls = _log_softmax(s[k, cols] / temperature)
        rows.append((np.exp(lt) * (lt - ls)).sum())
    return temperature ** 2 * float(np.mean(rows))


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_soft_kl_loss_matches_numpy(temperature):
    rng = np.random.default_rng(0)
    s = rng.normal(size=(3, 5)).astype(np.float32) * 2
    t = rng.normal(size=(3, 5)).astype(np.float32) * 2
    got = float(objectives.soft_kl_loss(jnp.asarray(s), jnp.asarray(t), temperature))
    np.testing.assert_allclose(got, _kl_by_hand(s, t, temperature), rtol=1e-5)
    assert got > 0


def test_soft_kl_loss_two_items_closed_form():
    # One row, two candidates: teacher p = (1/2, 1/2), student q = (1/4, 3/4) at T = 1:
    # KL = ½ ln(½/¼) + ½ ln(½/¾) = ½ ln 2 + ½ ln(2/3).
    s = jnp.array([[0.0, LN3]])
    t = jnp.array([[0.0, 0.0]])
    expected = 0.5 * LN2 + 0.5 * math.log(2 / 3)
    np.testing.assert_allclose(objectives.soft_kl_loss(s, t, 1.0), expected, rtol=1e-6)
    # At T = 2 the logits halve: q = softmax(0, ln3/2) = (1, √3)/(1+√3); times T² = 4.
    q0 = 1 / (1 + math.sqrt(3))
    expected2 = 4 * (0.5 * math.log(0.5 / q0) + 0.5 * math.log(0.5 / (1 - q0)))
    np.testing.assert_allclose(objectives.soft_kl_loss(s, t, 2.0), expected2, rtol=1e-6)


def test_soft_kl_loss_zero_when_student_equals_teacher():
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 7)), jnp.float32)
    for temperature in (1.0, 2.0, 5.0):
        np.testing.assert_allclose(objectives.soft_kl_loss(x, x, temperature), 0.0, atol=1e-6)
    # Adding a per-row constant to the student changes no probability either.
    np.testing.assert_allclose(objectives.soft_kl_loss(x + 3.0, x, 2.0), 0.0, atol=1e-5)


def test_soft_kl_loss_candidate_mask():
    rng = np.random.default_rng(2)
    s = rng.normal(size=(2, 6)).astype(np.float32)
    t = rng.normal(size=(2, 6)).astype(np.float32)
    keep = np.array([[1, 1, 0, 1, 0, 1], [0, 1, 1, 1, 1, 1]], bool)
    got = float(objectives.soft_kl_loss(jnp.asarray(s), jnp.asarray(t), 2.0, jnp.asarray(keep)))
    np.testing.assert_allclose(got, _kl_by_hand(s, t, 2.0, keep), rtol=1e-5)
    # Whatever sits in removed candidates does not matter (and makes no NaN).
    s2, t2 = s.copy(), t.copy()
    s2[~keep], t2[~keep] = 1e4, -1e4
    got2 = objectives.soft_kl_loss(jnp.asarray(s2), jnp.asarray(t2), 2.0, jnp.asarray(keep))
    np.testing.assert_allclose(got2, got, rtol=1e-6)
    grads = jax.grad(objectives.soft_kl_loss)(jnp.asarray(s2), jnp.asarray(t2), 2.0,
                                              jnp.asarray(keep))
    assert np.all(np.isfinite(grads)) and np.all(np.asarray(grads)[~keep] == 0)


# ---------------------------------------------------------------------------
# Top-K ranking distillation.
# ---------------------------------------------------------------------------


def _row_weights(scheme, scores, in_student, valid, lam=2.0):
    return np.asarray(objectives.rank_weights(scheme, jnp.asarray([scores], jnp.float32),
                                              jnp.asarray([in_student]), jnp.asarray([valid]),
                                              lam))[0]


def test_rank_weights_position():
    w = _row_weights("position", [9.0, 5.0, 1.0], [False] * 3, [True] * 3, lam=2.0)
    e = np.array([1.0, math.exp(-0.5), math.exp(-1.0)])
    np.testing.assert_allclose(w, e / e.sum(), rtol=1e-6)
    # The middle item removed: its weight is 0, the others renormalise.
    w = _row_weights("position", [9.0, 5.0, 1.0], [False] * 3, [True, False, True], lam=2.0)
    np.testing.assert_allclose(w, [1 / (1 + math.exp(-1)), 0.0,
                                   math.exp(-1) / (1 + math.exp(-1))], rtol=1e-6)


def test_rank_weights_confidence():
    w = _row_weights("confidence", [LN3, 0.0, 0.0], [False] * 3, [True] * 3)
    np.testing.assert_allclose(w, [0.6, 0.2, 0.2], rtol=1e-6)  # softmax(ln 3, 0, 0)
    w = _row_weights("confidence", [LN3, 0.0, 50.0], [False] * 3, [True, True, False])
    np.testing.assert_allclose(w, [0.75, 0.25, 0.0], rtol=1e-6)  # invalid excluded from softmax


def test_rank_weights_consistency():
    w = _row_weights("consistency", [3.0, 2.0, 1.0, 0.0], [True, False, True, False],
                     [True] * 4)
    np.testing.assert_allclose(w, [2 / 6, 1 / 6, 2 / 6, 1 / 6], rtol=1e-6)
    w = _row_weights("consistency", [3.0, 2.0, 1.0, 0.0], [True, False, True, False],
                     [True, True, False, True])
    np.testing.assert_allclose(w, [0.5, 0.25, 0.0, 0.25], rtol=1e-6)


def test_rank_weights_hybrid_is_normalised_product():
    scores, in_student, valid = [2.0, 1.0, 0.5, 0.0], [False, True, True, False], [True] * 4
    position = np.exp(-np.arange(4) / 2.0)
    confidence = np.exp(scores) / np.exp(scores).sum()
    consistency = 1.0 + np.array(in_student, float)
    product = position * confidence * consistency
    np.testing.assert_allclose(_row_weights("hybrid", scores, in_student, valid),
                               product / product.sum(), rtol=1e-5)
    valid = [True, False, True, True]
    confidence = np.where(valid, np.exp(scores), 0.0)
    confidence /= confidence.sum()
    product = np.where(valid, position * confidence * consistency, 0.0)
    np.testing.assert_allclose(_row_weights("hybrid", scores, in_student, valid),
                               product / product.sum(), rtol=1e-5)


@pytest.mark.parametrize("scheme", objectives.RANK_WEIGHTINGS)
def test_rank_weights_rows_sum_to_one_and_invalid_is_zero(scheme):
    rng = np.random.default_rng(3)
    scores = -np.sort(-rng.normal(size=(6, 5)), axis=1).astype(np.float32)
    in_student = rng.random((6, 5)) < 0.5
    valid = rng.random((6, 5)) < 0.7
    valid[:, 0] = True
    w = np.asarray(objectives.rank_weights(scheme, jnp.asarray(scores), jnp.asarray(in_student),
                                           jnp.asarray(valid), 3.0))
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
    assert np.all(w[~valid] == 0) and np.all(w[valid] > 0)
    # A row with nothing left is all zeros (no NaN).
    none = np.asarray(objectives.rank_weights(scheme, jnp.asarray(scores[:1]),
                                              jnp.asarray(in_student[:1]),
                                              jnp.zeros((1, 5), bool), 3.0))
    assert np.all(none == 0)


def test_rank_weights_unknown_scheme_names_config_key():
    with pytest.raises(ValueError, match="config.distill.rank_weighting"):
        objectives.rank_weights("bogus", jnp.zeros((1, 2)), jnp.zeros((1, 2), bool),
                                jnp.ones((1, 2), bool), 1.0)


def test_topk_rank_loss_sigmoid_and_softmax():
    s = jnp.array([[0.0, LN3], [2.0, -1.0]])
    w = jnp.array([[0.5, 0.5], [1.0, 0.0]])
    # Sigmoid: row 0: -(½ ln ½ + ½ ln ¾); row 1: -ln σ(2).
    row0 = -(0.5 * math.log(0.5) + 0.5 * math.log(0.75))
    row1 = math.log1p(math.exp(-2.0))
    np.testing.assert_allclose(objectives.topk_rank_loss(s, w, "sigmoid"), (row0 + row1) / 2,
                               rtol=1e-6)
    # Softmax over a catalogue with log-partition Z: -Σ w (s - log Z).
    log_z = jnp.array([math.log(10.0), 3.0])
    row0 = -(0.5 * (0.0 - math.log(10)) + 0.5 * (LN3 - math.log(10)))
    row1 = -(2.0 - 3.0)
    np.testing.assert_allclose(objectives.topk_rank_loss(s, w, "softmax", log_z),
                               (row0 + row1) / 2, rtol=1e-6)
    # Zero-weight (removed) items get no gradient.
    g = jax.grad(lambda x: objectives.topk_rank_loss(x, w, "sigmoid"))(s)
    assert float(g[1, 1]) == 0.0 and float(g[0, 0]) < 0
    with pytest.raises(ValueError, match="rank loss form"):
        objectives.topk_rank_loss(s, w, "hinge")


# ---------------------------------------------------------------------------
# Embedding distillation and the weighted total.
# ---------------------------------------------------------------------------


def test_embedding_loss_mse_and_cosine():
    p = jnp.array([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0]])
    t = jnp.array([[0.0, 1.0], [2.0, 2.0], [-3.0, -4.0]])
    # mse: squared distance summed over dims, mean over rows: (2 + 2 + 100) / 3.
    np.testing.assert_allclose(objectives.embedding_loss(p, t, "mse"), 104 / 3, rtol=1e-6)
    # cosine: 1 - cos: orthogonal 1, parallel 0, opposite 2.
    np.testing.assert_allclose(objectives.embedding_loss(p, t, "cosine"), 1.0, rtol=1e-6)
    np.testing.assert_allclose(objectives.embedding_loss(p, 5 * p, "cosine"), 0.0, atol=1e-6)
    # A zero vector does not make NaN.
    assert np.isfinite(objectives.embedding_loss(jnp.zeros((1, 2)), t[:1], "cosine"))
    with pytest.raises(ValueError, match="config.distill.emb_loss"):
        objectives.embedding_loss(p, t, "l1")


def test_weighted_total_drops_zero_weight_terms():
    terms = {"hard": jnp.asarray(2.0), "soft": jnp.asarray(float("nan")),
             "rank": jnp.asarray(4.0)}
    total = objectives.weighted_total(terms, {"hard": 0.5, "soft": 0.0, "rank": 0.25})
    assert float(total) == 2.0  # 0.5 * 2 + 0.25 * 4; the NaN term is not even multiplied
    assert float(objectives.weighted_total({"hard": jnp.asarray(3.0)}, {"hard": 1.0})) == 3.0
    # A term's gradient is gone with it.
    g = jax.grad(lambda x: objectives.weighted_total({"a": x ** 2, "b": 3 * x},
                                                     {"a": 0.0, "b": 1.0}))(2.0)
    assert float(g) == 3.0


# ---------------------------------------------------------------------------
# Top-k without XLA's top_k.
# ---------------------------------------------------------------------------


def test_top_k_by_passes_and_kth_largest_match_lax_top_k():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 50))
    for k in (1, 5, 10):
        values, indices = objectives.top_k_by_passes(x, k)
        ref_values, ref_indices = jax.lax.top_k(x, k)
        np.testing.assert_array_equal(values, ref_values)
        np.testing.assert_array_equal(indices, ref_indices)
        assert indices.dtype == jnp.int32 and values.shape == (2, 7, k)
        np.testing.assert_array_equal(objectives.kth_largest(x, k), ref_values[..., -1:])
    # Masked (-inf) entries are never picked before real ones.
    masked = jnp.where(jnp.arange(50) % 2 == 0, -jnp.inf, x)
    _, idx = objectives.top_k_by_passes(masked, 10)
    assert np.all(np.asarray(idx) % 2 == 1)


def test_kth_largest_counts_ties_once():
    x = jnp.array([[3.0, 3.0, 2.0, 1.0]])
    assert float(objectives.kth_largest(x, 2)[0, 0]) == 2.0
    assert float(objectives.top_k_by_passes(x, 2)[0][0, 1]) == 3.0  # top_k keeps both 3s


def test_softmax_ce_with_one_row_shared_by_several_targets():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(3, 1, 7)), jnp.float32)
    targets = jnp.array([[1, 4, -1], [0, -1, -1], [6, 2, 3]])
    mask = targets >= 0
    shared = objectives.softmax_ce_loss(logits, targets, mask)
    # The same as repeating the row for every target.
    repeated = objectives.softmax_ce_loss(jnp.repeat(logits, 3, axis=1), targets, mask)
    np.testing.assert_allclose(shared, repeated, rtol=1e-6)
    log_p = np.asarray(jax.nn.log_softmax(logits[:, 0]))
    expected = -np.mean([log_p[0, 1], log_p[0, 4], log_p[1, 0], log_p[2, 6], log_p[2, 2],
                         log_p[2, 3]])
    np.testing.assert_allclose(shared, expected, rtol=1e-6)


def test_sasrec_sampled_loss_estimates_the_full_softmax(ml100k_ratio):
    """With many uniform draws, SASRec's sampled loss (importance weight
    log(num_items / N) on each draw) approaches its full-catalogue loss and
    its gradient; without the weight it would sit log(N / num_items) off."""
    from configs import common
    from rec_jax import recipes

    def loss_and_grad(num_sampled):
        config = common.base_config()
        config.model.sasrec.dropout = 0.0
        config.model.sasrec.num_layers, config.model.sasrec.max_len = 1, 20
        config.model.sasrec.sampled_negatives = num_sampled
        spec = recipes.model_spec("sasrec", config, ml100k_ratio, {})
        params = spec.init(jax.random.PRNGKey(0))
        batch = spec.source.make_batch(np.arange(32), np.random.default_rng(0))
        fn = lambda p: spec.loss_fn(p, batch, {}, None, jax.random.PRNGKey(1))[0]  # noqa: E731
        loss, grads = jax.jit(jax.value_and_grad(fn))(params)
        return float(loss), np.concatenate([np.ravel(g) for g in jax.tree.leaves(grads)])

    full_loss, full_grad = loss_and_grad(0)
    many = 16 * ml100k_ratio.num_items
    loss, grad = loss_and_grad(many)
    assert abs(loss - full_loss) < 0.01 * full_loss
    cosine = grad @ full_grad / np.linalg.norm(grad) / np.linalg.norm(full_grad)
    assert cosine > 0.95
