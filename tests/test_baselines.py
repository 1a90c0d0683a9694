"""The baselines a gain is measured against: EASE, MF with a softmax loss,
DeepFM trained on implicit interactions."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from configs import common

from rec_jax import recipes
from rec_jax.models.ease import EASE, ease_weights


def test_ease_is_the_ridge_regression_of_each_item_on_the_others():
    """Column j of B solves min ||X_j - X_{-j} b||² + λ||b||² with b_j = 0."""
    rng = np.random.default_rng(0)
    x = (rng.random((40, 9)) < 0.3).astype(np.float32)
    lam = 3.0
    b = ease_weights(x, lam)
    for j in range(9):
        rest = [k for k in range(9) if k != j]
        a = x[:, rest].astype(np.float64)
        ridge = np.linalg.solve(a.T @ a + lam * np.eye(8), a.T @ x[:, j])
        np.testing.assert_allclose(b[rest, j], ridge, atol=1e-5)
        assert b[j, j] == 0.0
    scores = EASE.score_all({"B": b}, {"user": np.array([2, 5])}, {"train_matrix": x})
    np.testing.assert_allclose(scores, x[[2, 5]] @ b, rtol=1e-6)


def _batch(spec, n=64):
    rng = np.random.default_rng(0)
    return spec.source.make_batch(np.arange(n), rng)


def test_mf_softmax_loss_is_cross_entropy_over_the_catalogue(ml100k_ratio):
    config = common.base_config()
    config.model.mf.loss = "softmax"
    spec = recipes.model_spec("mf", config, ml100k_ratio, {})
    params = spec.init(jax.random.PRNGKey(0))
    params = jax.tree.map(lambda p: p + 0.1 * np.random.default_rng(1).normal(size=p.shape),
                          params)
    batch = _batch(spec)
    loss, _, n = spec.hard_fn(params, batch, {}, jax.random.PRNGKey(0))
    user = np.asarray(params["user_embed"]["embedding"])[batch["user"]]
    logits = user @ np.asarray(params["item_embed"]["embedding"]).T + np.asarray(params["item_bias"])
    log_z = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    expected = np.mean(log_z - logits[np.arange(len(user)), batch["item"]])
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(n) == 64
    config.model.mf.loss = "hinge"
    with pytest.raises(ValueError, match="config.model.mf.loss='hinge'"):
        recipes.model_spec("mf", config, ml100k_ratio, {})


def test_deepfm_implicit_labels_every_interaction_rating_labels_only_high_ones(ml100k_ratio):
    from rec_jax.data import features
    data = ml100k_ratio
    side = features.side_features(data.dataset, data.dataset.item[data.split.train])
    config = common.base_config()
    labels = {}
    for label in ("implicit", "rating"):
        config.model.deepfm.label = label
        spec = recipes.model_spec("deepfm", config, data, side)
        batch = _batch(spec, 512)
        labels[label] = np.asarray(batch["label"])
        ratings = data.dataset.rating[data.split.train][batch["row"]]
    assert labels["implicit"].min() == 1.0
    np.testing.assert_array_equal(labels["rating"], (ratings >= 4.0).astype(np.float32))
    assert 0.3 < labels["rating"].mean() < 0.8
