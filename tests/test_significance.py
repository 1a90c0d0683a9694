"""Paired tests over users (rec_jax/eval/significance.py) on hand-made values."""

from __future__ import annotations

import numpy as np
import pytest

from rec_jax.eval import significance as sig


def _model(ids, values):
    return {"user_id": np.array(ids), "ndcg@10": np.array(values, np.float64)}


def test_pairs_align_by_user_id_and_drop_missing_users():
    a = _model(["u1", "u2", "u3", "u4"], [0.5, 0.0, 1.0, np.nan])
    b = _model(["u3", "u1", "u5", "u4"], [0.25, 0.5, 0.9, 0.1])
    x, y = sig.paired_values(a, b, "ndcg@10")
    # u2 and u5 are in one model only; u4 has no held-out item for a (NaN).
    np.testing.assert_array_equal(x, [0.5, 1.0])
    np.testing.assert_array_equal(y, [0.5, 0.25])


def test_paired_test_hand_computed():
    x = np.array([0.3, 0.5, 0.2, 0.9, 0.4])
    y = np.array([0.1, 0.4, 0.2, 0.6, 0.5])
    out = sig.paired_test(x, y)
    d = x - y  # 0.2, 0.1, 0, 0.3, -0.1
    assert out["n"] == 5
    assert out["diff"] == pytest.approx(d.mean())
    assert out["rel"] == pytest.approx(x.mean() / y.mean() - 1)
    # mean(d) = 0.1, squared deviations sum to 0.10, sd (n-1) = sqrt(0.025):
    # t = 0.1 / sqrt(0.025 / 5) = sqrt(2); two-sided p of t(4) at sqrt(2) = 0.2302.
    assert d.mean() / (d.std(ddof=1) / np.sqrt(5)) == pytest.approx(np.sqrt(2))
    assert out["p_t"] == pytest.approx(0.2302, abs=1e-4)
    # Wilcoxon, zero dropped: ranks of |d| = 0.1, 0.1, 0.2, 0.3 -> 1.5, 1.5, 3, 4;
    # W- = 1.5 (the one negative), exact two-sided p for n=4 with ties -> scipy's value.
    assert 0.2 < out["p_wilcoxon"] <= 1.0


def test_a_consistent_gain_is_significant_and_no_difference_is_not():
    rng = np.random.default_rng(0)
    y = rng.random(500)
    assert sig.paired_test(y + 0.05, y)["p_wilcoxon"] < 1e-4
    assert sig.paired_test(y + 0.05, y)["p_t"] < 1e-4
    same = sig.paired_test(y, y)
    assert same["p_t"] == 1.0 and same["p_wilcoxon"] == 1.0 and same["diff"] == 0.0
    noise = sig.paired_test(y + rng.normal(0, 0.1, 500), y)
    assert noise["p_t"] > 0.01


def test_pooling_over_seeds_concatenates_each_seeds_own_pairs():
    a0, b0 = _model(["u1", "u2"], [0.6, 0.4]), _model(["u2", "u1"], [0.3, 0.5])
    a1, b1 = _model(["u1", "u2"], [0.2, 0.9]), _model(["u1", "u2"], [0.1, 0.7])
    out = sig.pooled_test([(a0, b0), (a1, b1)], "ndcg@10")
    assert out["n"] == 4
    assert out["diff"] == pytest.approx(np.mean([0.1, 0.1, 0.1, 0.2]))


def test_format_p():
    assert sig.format_p(0.04321) == "0.0432"
    assert sig.format_p(3e-7) == "<1e-4"
    assert sig.format_p(float("nan")) == "—"
