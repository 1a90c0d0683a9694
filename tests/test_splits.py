"""Each split's guarantees on MovieLens-100K."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from rec_jax.data import splits


@pytest.fixture(scope="module")
def made(ml100k):
    """Splits are made once per module; each takes well under a second."""
    cache = {}

    def get(name, seed=0, **kw):
        key = (name, seed, tuple(sorted(kw.items())))
        if key not in cache:
            cache[key] = splits.make_split(ml100k, name, seed, **kw)
        return cache[key]
    return get


def _per_user(dataset, rows):
    return np.bincount(dataset.user[rows], minlength=dataset.num_users)


HOLDOUT_SPLITS = ("loo_time", "ratio", "cold_items")  # every row in one part ("window": below)


@pytest.mark.parametrize("name", HOLDOUT_SPLITS)
def test_parts_are_disjoint_and_cover_all_rows(ml100k, made, name):
    s = made(name)
    rows = np.concatenate([s.train, s.valid, s.test])
    assert len(rows) == ml100k.num_interactions
    np.testing.assert_array_equal(np.sort(rows), np.arange(ml100k.num_interactions))
    # No test (or valid) interaction is also a training interaction.
    pairs = lambda r: set(zip(ml100k.user[r].tolist(), ml100k.item[r].tolist()))  # noqa: E731
    assert not pairs(s.test) & pairs(s.train)
    assert not pairs(s.valid) & pairs(s.train)
    assert len(s.valid) > 0 and len(s.test) > 0


def test_loo_time_holds_out_each_users_latest(ml100k, made):
    s = made("loo_time")
    d = ml100k
    assert len(s.test) == len(s.valid) == d.num_users  # every ml-100k user has >= 20 ratings
    np.testing.assert_array_equal(np.sort(d.user[s.test]), np.arange(d.num_users))
    latest_train = np.full(d.num_users, np.iinfo(np.int64).min)
    np.maximum.at(latest_train, d.user[s.train], d.timestamp[s.train])
    valid_time = np.zeros(d.num_users, np.int64)
    valid_time[d.user[s.valid]] = d.timestamp[s.valid]
    test_time = np.zeros(d.num_users, np.int64)
    test_time[d.user[s.test]] = d.timestamp[s.test]
    assert np.all(latest_train <= valid_time) and np.all(valid_time <= test_time)
    # The split's time order says which of several same-time rows is latest.
    rank_of = s.time_rank
    last = np.full(d.num_users, -1, np.int64)
    np.maximum.at(last, d.user, rank_of)
    np.testing.assert_array_equal(np.sort(rank_of[s.test]), np.sort(last))
    # Deterministic for a seed.
    np.testing.assert_array_equal(splits.make_split(d, "loo_time", seed=0).test, s.test)


def test_loo_time_item_id_ties_reproduce_the_old_split(ml100k, made):
    """tie_order="item_id" is the order rows are stored in (user, time, item):
    test is each user's last row and valid the one before, for every seed."""
    d = ml100k
    s = made("loo_time", tie_order="item_id")
    last_row = np.zeros(d.num_users, np.int64)
    np.maximum.at(last_row, d.user, np.arange(d.num_interactions))
    np.testing.assert_array_equal(np.sort(s.test), np.sort(last_row))
    np.testing.assert_array_equal(np.sort(s.valid), np.sort(last_row - 1))
    np.testing.assert_array_equal(
        splits.make_split(d, "loo_time", seed=5, tie_order="item_id").test, s.test)


def _tied_dataset(num_users=400, seed=0):
    """Each user rates 6 items at distinct times, then 2 items in the same second."""
    from rec_jax.data.dataset import Dataset
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for u in range(num_users):
        chosen = rng.choice(50, 8, replace=False)
        users += [u] * 8
        items += chosen.tolist()
        times += [10, 20, 30, 40, 50, 60, 70, 70]
    n = len(users)
    order = np.lexsort((items, times, users))  # stored as the real data: (user, time, item)
    return Dataset(
        name="ties", user=np.array(users, np.int32)[order], item=np.array(items, np.int32)[order],
        rating=np.full(n, 4.0, np.float32), timestamp=np.array(times, np.int64)[order],
        user_ids=np.arange(num_users).astype(str), item_ids=np.arange(50).astype(str),
        item_title=np.array([f"t{i}" for i in range(50)]), item_year=np.zeros(50, np.int32),
        item_genres=np.zeros((50, 19), bool), user_age=np.zeros(num_users, np.int32),
        user_gender=np.array(["M"] * num_users), user_occupation=np.array(["x"] * num_users),
        user_zip=np.array(["0"] * num_users))


def test_tied_holdouts_are_not_chosen_by_item_id():
    """With two same-time last ratings, the old order made test the higher ID
    every time; the seeded order picks either, about half the time each, and
    the training sequences, valid and test all follow that one order."""
    from rec_jax.data import interactions
    d = _tied_dataset()
    old = splits.make_split(d, "loo_time", 0, tie_order="item_id")
    assert np.all(d.item[old.test] > d.item[old.valid])
    new = splits.make_split(d, "loo_time", 0)
    higher = np.mean(d.item[new.test] > d.item[new.valid])
    assert 0.4 < higher < 0.6
    # Another seed, another tie order; the same seed, the same one.
    other = splits.make_split(d, "loo_time", 1)
    assert not np.array_equal(np.sort(other.test), np.sort(new.test))
    np.testing.assert_array_equal(splits.make_split(d, "loo_time", 0).test, new.test)
    # A user's training history ends before valid, which comes before test, in
    # the split's own order.
    data = interactions.build(d, new)
    rank_of = {(int(d.user[r]), int(d.item[r])): new.time_rank[r] for r in range(len(d.user))}
    for u in range(d.num_users):
        history = data.history(u, include_valid=True)
        ranks = [rank_of[(u, int(i))] for i in history]
        assert ranks == sorted(ranks)
        assert rank_of[(u, int(data.test.row(u)[0]))] > ranks[-1]


def test_ratio_histories_break_ties_by_the_seeded_order_too(ml100k, made):
    from rec_jax.data import interactions
    s = made("ratio")
    data = interactions.build(ml100k, s)
    rows = data.train.rows
    for u in range(0, ml100k.num_users, 50):
        lo, hi = data.train.indptr[u], data.train.indptr[u + 1]
        assert np.all(np.diff(s.time_rank[rows[lo:hi]]) > 0)


def test_unknown_tie_order_is_refused(ml100k):
    with pytest.raises(ValueError, match="config.data.tie_order"):
        splits.make_split(ml100k, "loo_time", 0, tie_order="by_title")


def test_ratio_is_8_1_1_per_user_and_seeded(ml100k, made):
    s = made("ratio")
    d = ml100k
    n = _per_user(d, np.arange(d.num_interactions))
    for part, share in (("train", 0.8), ("valid", 0.1), ("test", 0.1)):
        counts = _per_user(d, getattr(s, part))
        # Per user the share is exact up to rounding of one row.
        assert np.all(np.abs(counts - share * n) <= 1.0), part
    assert len(s.train) / d.num_interactions == pytest.approx(0.8, abs=0.005)
    same = splits.make_split(d, "ratio", seed=0)
    for part in ("train", "valid", "test"):
        np.testing.assert_array_equal(getattr(same, part), getattr(s, part))
    other = made("ratio", seed=1)
    assert not np.array_equal(other.test, s.test)
    # A different seed gives a different split, not a different size.
    np.testing.assert_array_equal(_per_user(d, other.test), _per_user(d, s.test))


def test_cold_items_never_in_train(ml100k, made):
    s = made("cold_items")
    d = ml100k
    assert len(s.cold_items) == round(0.1 * d.num_items)
    assert len(np.unique(s.cold_items)) == len(s.cold_items)
    assert not np.isin(d.item[s.train], s.cold_items).any()
    cold_rows = np.flatnonzero(np.isin(d.item, s.cold_items))
    held_out = np.concatenate([s.valid, s.test])
    assert np.isin(cold_rows, held_out).all()
    # Cold interactions go to both valid and test, about half each.
    in_valid = np.isin(cold_rows, s.valid).mean()
    assert 0.4 < in_valid < 0.6
    # Seeded.
    np.testing.assert_array_equal(splits.make_split(d, "cold_items", 0).cold_items, s.cold_items)
    assert not np.array_equal(made("cold_items", seed=1).cold_items, s.cold_items)
    assert len(made("cold_items", cold_fraction=0.2).cold_items) == round(0.2 * d.num_items)


@pytest.mark.parametrize("name", ["ratio", "loo_time"])
def test_train_fraction_keeps_share_per_user_and_leaves_valid_test(ml100k, made, name):
    full = made(name)
    half = made(name, train_fraction=0.5)
    d = ml100k
    np.testing.assert_array_equal(half.valid, full.valid)
    np.testing.assert_array_equal(half.test, full.test)
    assert np.isin(half.train, full.train).all()  # a subset of the same training rows
    full_counts, kept = _per_user(d, full.train), _per_user(d, half.train)
    expected = np.maximum(1, np.round(0.5 * full_counts))
    np.testing.assert_array_equal(kept, expected)
    tenth = made(name, train_fraction=0.1)
    assert np.all(_per_user(d, tenth.train) >= 1)  # every user keeps at least one row
    assert len(tenth.train) == pytest.approx(0.1 * len(full.train), rel=0.05)
    with pytest.raises(ValueError, match="train_fraction"):
        splits.make_split(d, name, 0, train_fraction=0.0)


def test_unknown_split_is_refused(ml100k):
    with pytest.raises(ValueError, match="no_such_split"):
        splits.make_split(ml100k, "no_such_split", 0)


def test_write_csv_uses_original_ids(ml100k, made, tmp_path):
    d = ml100k
    s = made("cold_items")
    splits.write_csv(d, s, str(tmp_path))
    for part in ("train", "valid", "test"):
        with open(tmp_path / f"{part}.csv") as f:
            rows = list(csv.reader(f))
        assert rows[0] == ["user_id", "item_id", "rating", "timestamp"]
        rows = rows[1:]
        idx = getattr(s, part)
        assert len(rows) == len(idx)
        expected = [(d.user_ids[d.user[r]], d.item_ids[d.item[r]], float(d.rating[r]),
                     int(d.timestamp[r])) for r in idx]
        assert [(u, i, float(r), int(t)) for u, i, r, t in rows] == expected
    # Original MovieLens ids run from 1, contiguous ids from 0: check a known
    # row of u.data ("196 242 3 881250949") survives the round trip.
    with open(tmp_path / "train.csv") as f, open(tmp_path / "valid.csv") as g, \
            open(tmp_path / "test.csv") as h:
        everything = {tuple(r) for src in (f, g, h) for r in csv.reader(src)}
    assert ("196", "242", "3", "881250949") in everything
    with open(tmp_path / "cold_items.csv") as f:
        cold = [r[0] for r in csv.reader(f)][1:]
    assert cold == list(d.item_ids[s.cold_items])


def test_window_trains_before_and_tests_within_the_period(ml100k):
    start, end = splits.window_bounds("1998-01-01,1998-02-01,1998-03-01", 1)
    assert (start, end) == (886291200, 888710400)  # 1998-02-01 and 1998-03-01, UTC
    s = splits.make_split(ml100k, "window", 0, window=(start, end))
    d = ml100k
    assert (d.timestamp[s.train] < start).all() and (d.timestamp[s.valid] < start).all()
    assert ((d.timestamp[s.test] >= start) & (d.timestamp[s.test] < end)).all()
    # Valid is each earlier user's latest interaction (time order), train the rest.
    for u in np.unique(d.user[s.valid])[:50]:
        train_u = s.train[d.user[s.train] == u]
        valid_u = s.valid[d.user[s.valid] == u]
        assert len(valid_u) == 1 and (s.time_rank[train_u] < s.time_rank[valid_u[0]]).all()
    # Test users all have history; the period's new users are left out.
    known = set(d.user[s.train].tolist())
    assert set(d.user[s.test].tolist()) <= known
    in_period = (d.timestamp >= start) & (d.timestamp < end)
    new_users = set(d.user[in_period].tolist()) - known
    assert new_users and len(s.test) == in_period.sum() - np.isin(d.user, list(new_users))[
        in_period].sum()


@pytest.mark.parametrize("edges,window,message", [
    ("1998-01-01", 0, "use 0..-1"), ("1998-02-01,1998-01-01", 0, "must ascend"),
    ("1998-01-01,1998-13-01", 0, "window_edges"), ("1998-01-01,1998-02-01", 1, "use 0..0")])
def test_window_bounds_are_checked(edges, window, message):
    with pytest.raises(ValueError, match=message):
        splits.window_bounds(edges, window)
