"""Metric maths on hand-computed cases, and the Evaluator on fake models with fixed scores."""

from __future__ import annotations

import csv
import itertools
import math

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ndcg_from_csvs
from rec_jax.data import interactions, splits
from rec_jax.data.dataset import Dataset
from rec_jax.eval import metrics
from rec_jax.eval.evaluator import Evaluator

L2 = math.log2


# ---------------------------------------------------------------------------
# ranking_sums / finalize
# ---------------------------------------------------------------------------


def _truth(rows, num_items):
    t = np.zeros((len(rows), num_items), bool)
    for u, items in enumerate(rows):
        t[u, list(items)] = True
    return jnp.asarray(t)


def test_ranking_sums_hand_computed():
    top = jnp.asarray([[2, 0, 5, 1],    # A: relevant {0, 1, 4}: hits at ranks 2 and 4
                       [5, 0, 1, 2],    # B: relevant {5}: hit at rank 1
                       [0, 1, 2, 3],    # C: nothing relevant: not counted at all
                       [0, 1, 2, 4]])   # D: relevant {3}: no hit
    truth = _truth([{0, 1, 4}, {5}, set(), {3}], 6)
    sums = metrics.ranking_sums(top, truth, (2, 4))
    a = {"recall@2": 1 / 3, "ndcg@2": (1 / L2(3)) / (1 + 1 / L2(3)), "hr@2": 1, "mrr@2": 1 / 2,
         "recall@4": 2 / 3, "ndcg@4": (1 / L2(3) + 1 / L2(5)) / (1 + 1 / L2(3) + 1 / L2(4)),
         "hr@4": 1, "mrr@4": 1 / 2}
    b = dict.fromkeys(a, 1.0)
    assert float(sums["users"]) == 3  # C has no relevant item
    for key in a:
        assert float(sums[key]) == pytest.approx(a[key] + b[key] + 0.0, abs=1e-6), key
    final = metrics.finalize({k: float(v) for k, v in sums.items()})
    assert final["users"] == 3
    assert final["ndcg@4"] == pytest.approx((a["ndcg@4"] + 1) / 3, abs=1e-6)
    assert final["mrr@2"] == pytest.approx((0.5 + 1) / 3, abs=1e-6)


def test_ranking_sums_user_mask_and_idcg_cap():
    # Five relevant items but k = 2: IDCG is capped at two hits, so a perfect
    # top 2 scores NDCG 1 while recall is 2/5.
    top = jnp.asarray([[0, 1, 7], [0, 1, 7]])
    truth = _truth([{0, 1, 2, 3, 4}, {7}], 8)
    sums = metrics.ranking_sums(top, truth, (2,), user_mask=jnp.asarray([True, False]))
    assert float(sums["users"]) == 1  # the masked (padding) user is dropped
    assert float(sums["ndcg@2"]) == pytest.approx(1.0)
    assert float(sums["recall@2"]) == pytest.approx(2 / 5)
    assert float(sums["hr@2"]) == 1 and float(sums["mrr@2"]) == 1
    assert math.isnan(metrics.finalize({"users": 0.0, "ndcg@2": 0.0})["ndcg@2"])


# ---------------------------------------------------------------------------
# AUC and LogLoss
# ---------------------------------------------------------------------------


def _auc_pairwise(labels, scores):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auc_hand_case_with_ties():
    # Pairs: (0.8 vs 0.8) tie 0.5, (0.8 vs 0.1) 1, (0.3 vs 0.8) 0, (0.3 vs 0.1) 1 -> 2.5 / 4.
    assert metrics.auc([1, 0, 1, 0], [0.8, 0.8, 0.3, 0.1]) == pytest.approx(0.625)
    assert metrics.auc([1, 1, 0], [0.5, 0.5, 0.5]) == pytest.approx(0.5)
    assert metrics.auc([0, 1], [0.0, 1.0]) == 1.0 and metrics.auc([1, 0], [0.0, 1.0]) == 0.0
    assert math.isnan(metrics.auc([1, 1], [0.1, 0.2]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_brute_force_pairwise_count(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(300) < 0.4
    scores = rng.integers(0, 12, 300).astype(float)  # many ties
    assert metrics.auc(labels, scores) == pytest.approx(_auc_pairwise(labels, scores), abs=1e-12)


def test_logloss():
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0))) / 2  # y=1,z=2; y=0,z=-1
    assert metrics.logloss([1, 0], [2.0, -1.0]) == pytest.approx(expected, rel=1e-12)
    assert metrics.logloss([0.0], [0.0]) == pytest.approx(math.log(2))
    # Large logits stay finite: a confident wrong answer costs |z|.
    assert metrics.logloss([0, 1], [1000.0, -1000.0]) == pytest.approx(1000.0)
    assert metrics.logloss([1, 0], [1000.0, -1000.0]) == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------------------
# The Evaluator on a hand-built split and a fake model with fixed scores.
# ---------------------------------------------------------------------------
#
# 8 items, 3 users. Training popularity: item 0 x3, item 1 x2, item 2 x2, so
# head (20% of 8 = 2 items) = {0, 1}.
#   user 0: train {0, 1}, valid {2}, test {3, 5}
#   user 1: train {0, 2}, valid {3}, test {1, 6}
#   user 2: train {0, 1, 2}, valid {}, test {4}
# Scores: users 0 and 1 rank items 0, 1, 2, ..., 7; user 2 ranks 7, 6, ..., 0.

USER_IDS = np.array(["42", "17", "99"])
ITEM_IDS = np.array([str(101 + i) for i in range(8)])
PARTS = {"train": [(0, 0), (0, 1), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2)],
         "valid": [(0, 2), (1, 3)],
         "test": [(0, 3), (0, 5), (1, 1), (1, 6), (2, 4)]}
SCORES = np.array([[10.0 - i for i in range(8)], [10.0 - i for i in range(8)],
                   [float(i) for i in range(8)]], np.float32)
C3 = 1 + 1 / L2(3)  # IDCG of two hits


def tiny_split_data(cold_items=()):
    rows = [(u, i, part) for part, pairs in PARTS.items() for u, i in pairs]
    n = len(rows)
    dataset = Dataset(
        name="tiny", user=np.array([r[0] for r in rows], np.int32),
        item=np.array([r[1] for r in rows], np.int32), rating=np.full(n, 4.0, np.float32),
        timestamp=np.arange(n, dtype=np.int64), user_ids=USER_IDS, item_ids=ITEM_IDS,
        item_title=np.array([f"t{i}" for i in range(8)]), item_year=np.zeros(8, np.int32),
        item_genres=np.zeros((8, 19), bool), user_age=np.zeros(3, np.int32),
        user_gender=np.array(["M"] * 3), user_occupation=np.array(["x"] * 3),
        user_zip=np.array(["0"] * 3))
    part_rows = {p: np.array([k for k, r in enumerate(rows) if r[2] == p], np.int64)
                 for p in PARTS}
    split = splits.Split("hand", part_rows["train"], part_rows["valid"], part_rows["test"],
                         np.array(cold_items, np.int32))
    return interactions.build(dataset, split)


def user_query(users, part):
    del part
    return {"user": users}


def fixed_score_fn(params, query, side):
    del side
    return params["scores"][query["user"]]


def _evaluate(data, part, **kw):
    ev = Evaluator(data, part, ks=(1, 3), batch_users=2, num_recs=5, **kw)
    result, recs = ev.evaluate(fixed_score_fn, {"scores": jnp.asarray(SCORES)}, {}, user_query)
    return ev, result, recs


def test_evaluator_valid_excludes_training_items():
    _, r, recs = _evaluate(tiny_split_data(), "valid")
    # user 0 ranks 2,3,4,..: valid item 2 first. user 1 ranks 1,3,4,..: item 3 second.
    # user 2 has no valid item and is not counted.
    assert r["users"] == 2
    assert r["recall@1"] == pytest.approx(0.5)
    assert r["recall@3"] == pytest.approx(1.0)
    assert r["ndcg@3"] == pytest.approx((1 + 1 / L2(3)) / 2, abs=1e-6)
    assert r["mrr@3"] == pytest.approx((1 + 0.5) / 2)
    np.testing.assert_array_equal(recs["user"], [0, 1])
    np.testing.assert_array_equal(recs["items"], [[2, 3, 4, 5, 6], [1, 3, 4, 5, 6]])


def test_evaluator_test_excludes_train_and_valid_items_and_segments():
    _, r, recs = _evaluate(tiny_split_data(), "test")
    # user 0 ranks 3,4,5,6,7 (2 is a valid item): hits at ranks 1 and 3 of {3, 5}.
    # user 1 ranks 1,4,5,6,7 (3 is a valid item): hits at ranks 1 and 4 of {1, 6}.
    # user 2 ranks 7,6,5,4,3: its test item 4 is 4th.
    assert r["users"] == 3  # padding user of the last batch not counted
    assert r["recall@1"] == pytest.approx((0.5 + 0.5 + 0) / 3)
    assert r["recall@3"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert r["ndcg@3"] == pytest.approx(((1 + 1 / L2(4)) / C3 + 1 / C3 + 0) / 3, abs=1e-6)
    assert r["hr@3"] == pytest.approx(2 / 3) and r["mrr@3"] == pytest.approx(2 / 3)
    # head = {0, 1}: only user 1 has a held-out head item (1, ranked first).
    assert r["head/users"] == 1
    assert r["head/recall@1"] == pytest.approx(1.0) and r["head/ndcg@3"] == pytest.approx(1.0)
    # tail: user 0 {3, 5} as above, user 1 {6} at rank 4, user 2 {4} at rank 4.
    assert r["tail/users"] == 3
    assert r["tail/recall@3"] == pytest.approx(1 / 3)
    assert r["tail/ndcg@3"] == pytest.approx((1 + 1 / L2(4)) / C3 / 3, abs=1e-6)
    assert not any(k.startswith("cold") for k in r)  # no cold items in this split
    np.testing.assert_array_equal(
        recs["items"], [[3, 4, 5, 6, 7], [1, 4, 5, 6, 7], [7, 6, 5, 4, 3]])
    np.testing.assert_allclose(recs["scores"][0], [7, 6, 5, 4, 3])


def test_evaluator_cold_segment_and_cold_only():
    _, r, _ = _evaluate(tiny_split_data(cold_items=(5, 6)), "test")
    # cold among all items: user 0's item 5 is 3rd, user 1's item 6 is 4th.
    assert r["cold/users"] == 2
    assert r["cold/recall@3"] == pytest.approx(0.5)
    assert r["cold/ndcg@3"] == pytest.approx(1 / L2(4) / 2, abs=1e-6)
    # cold_only ranks {5, 6} alone: user 0 -> 5, 6 (hit first); user 1 -> 5, 6 (hit second).
    assert r["cold_only/users"] == 2
    assert r["cold_only/recall@1"] == pytest.approx(0.5)
    assert r["cold_only/ndcg@3"] == pytest.approx((1 + 1 / L2(3)) / 2, abs=1e-6)
    assert r["recall@3"] == pytest.approx(0.5)  # "all" is unchanged by marking items cold


def test_evaluator_writes_csvs_with_original_ids(tmp_path):
    ev, _, recs = _evaluate(tiny_split_data(), "test")
    ev.write_recs(recs, str(tmp_path))
    with open(tmp_path / "recs_test.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["user_id", "rank", "item_id", "score"]
    assert rows[1:6] == [["42", str(r), ITEM_IDS[i], f"{10.0 - i:g}"]
                         for r, i in enumerate([3, 4, 5, 6, 7], start=1)]
    assert [row[0] for row in rows[1:]] == ["42"] * 5 + ["17"] * 5 + ["99"] * 5
    with open(tmp_path / "truth_test.csv") as f:
        truth = list(csv.reader(f))
    assert truth[0] == ["user_id", "item_id"]
    assert sorted(map(tuple, truth[1:])) == sorted(
        (USER_IDS[u], ITEM_IDS[i]) for u, i in PARTS["test"])


def test_ndcg_recomputed_from_csvs_on_ml100k(ml100k_ratio, tmp_path):
    data = ml100k_ratio
    scores = np.random.default_rng(0).random((data.num_users, data.num_items)).astype(np.float32)
    # Give the fake model some skill: boost each user's test items by a random amount.
    test_users = data.dataset.user[data.split.test]
    test_items = data.dataset.item[data.split.test]
    scores[test_users, test_items] += np.random.default_rng(1).random(len(test_users))
    ev = Evaluator(data, "test")
    result, recs = ev.evaluate(fixed_score_fn, {"scores": jnp.asarray(scores)}, {}, user_query)
    ev.write_recs(recs, str(tmp_path))
    assert 0.05 < result["ndcg@10"] < 0.95
    recomputed = ndcg_from_csvs(tmp_path / "recs_test.csv", tmp_path / "truth_test.csv")
    assert recomputed == pytest.approx(result["ndcg@10"], abs=1e-5)
    # Recommended items never include the user's training or validation items.
    known = data.known_items("test")
    for u, items in zip(recs["user"][:100], recs["items"][:100]):
        assert not set(items) & set(known.row(u))


def test_evaluator_strict_segment_and_per_user_values(tmp_path):
    data = tiny_split_data()
    # Rows: 7 train, valid (0,2)=7, (1,3)=8, test (0,3)=9, (0,5)=10, (1,1)=11, (1,6)=12,
    # (2,4)=13, at timestamps 0..13. User 1's test item 1 now shares its validation
    # item's timestamp, so only user 0 is strictly later (user 2 has no valid item).
    data.dataset.timestamp[11] = data.dataset.timestamp[8]
    ev, r, recs = _evaluate(data, "test")
    u0, u1, u2 = (1 + 1 / L2(4)) / C3, 1 / C3, 0.0
    assert r["strict/users"] == 1
    assert r["strict/ndcg@3"] == pytest.approx(u0, abs=1e-6)
    assert r["strict/recall@1"] == pytest.approx(0.5)
    np.testing.assert_allclose(recs["per_user"]["ndcg@3"], [u0, u1, u2], atol=1e-6)
    assert np.mean(recs["per_user"]["ndcg@3"]) == pytest.approx(r["ndcg@3"], abs=1e-6)
    ev.write_recs(recs, str(tmp_path))
    with np.load(tmp_path / "per_user_test.npz") as f:
        assert list(f["user_id"]) == ["42", "17", "99"]
        np.testing.assert_allclose(f["recall@3"], [1.0, 0.5, 0.0])
    # Validation has no strict segment (it is defined against the test items).
    _, valid, _ = _evaluate(tiny_split_data(), "valid")
    assert not any(k.startswith("strict") for k in valid)


def test_evaluator_on_a_user_subset():
    _, r, recs = _evaluate(tiny_split_data(), "test", users=np.array([0, 2]))
    assert r["users"] == 2
    np.testing.assert_array_equal(recs["user"], [0, 2])
    # user 0: (1 + 1/log2(4)) / C3; user 2: 0 (its test item is 4th).
    assert r["ndcg@3"] == pytest.approx((1 + 1 / L2(4)) / C3 / 2, abs=1e-6)


def test_selection_halves_are_disjoint_seeded_and_cover_the_users(ml100k_ratio):
    from configs import common

    from rec_jax import run
    from rec_jax.spec import ModelName
    config = common.base_config()
    assert config.eval.selection == "halves"  # the fixed protocol's default
    config.eval.selection = "all"
    assert run.selection_users(config, ml100k_ratio, ModelName.parse("mf_kd")) is None
    config.eval.selection = "halves"
    teacher = run.selection_users(config, ml100k_ratio, ModelName.parse("teacher"))
    student = run.selection_users(config, ml100k_ratio, ModelName.parse("mf_kd"))
    assert not set(teacher) & set(student)
    assert len(teacher) + len(student) == ml100k_ratio.num_users
    np.testing.assert_array_equal(
        run.selection_users(config, ml100k_ratio, ModelName.parse("teacher_notext")), teacher)
    config.seed = 1
    assert not np.array_equal(run.selection_users(config, ml100k_ratio,
                                                  ModelName.parse("teacher")), teacher)
    config.eval.selection = "some"
    with pytest.raises(ValueError, match="config.eval.selection='some'"):
        run.selection_users(config, ml100k_ratio, ModelName.parse("mf"))
