"""Train / valid / test splits of the interactions.

* ``loo_time``: per user, the latest interaction is test and the second
  latest valid; for sequential models and the default of the distillation job.
* ``ratio``: per user, a seeded random 8:1:1 split (RecBole's default for
  ml-100k, so numbers sit beside RecBole's).
* ``cold_items``: a seeded fraction of items never appears in training; their
  interactions are split between valid and test, and the remaining (warm)
  interactions are split per user 8:1:1 at random. Only models that read item
  content can rank cold items.
* ``window``: everything before a time ``start`` is training (each user's
  latest such interaction is valid), and the interactions in ``[start, end)``
  of users with training history are test: "trained up to now, scored on the
  next period" (the refresh job, rec_jax.refresh, steps it through time).

**Ties in time.** MovieLens users rate in bursts: about half of consecutive
ratings share a timestamp, and for 44% of ml-100k users the last two do. The
order inside a tie must not come from the item ID: IDs correlate with
popularity and with the order of the catalogue, and "test = the higher ID of
the last two" let a content-free rule (the 10 unseen IDs just above the
validation item) beat MF. So every split carries ``time_rank``, each row's
position in time with ties broken by a seeded random permutation (a fixed
function of the data and the seed), and that one order makes the
``loo_time`` hold-outs and every training sequence. ``tie_order="item_id"``
restores the old order, only to reproduce old numbers.

A split is a set of row indices into the dataset's interaction arrays, plus
the cold item ids and the rows' time ranks. ``train_fraction`` < 1 then keeps a seeded fraction of
each user's training rows (few-label experiments); valid and test are never
touched by it, so every fraction is scored on the same held-out data.
"""

from __future__ import annotations

import csv
import dataclasses
import os

import numpy as np

from rec_jax import errors
from rec_jax.data.dataset import Dataset

SPLITS = ("loo_time", "ratio", "cold_items", "window")
TIE_ORDERS = ("random", "item_id")


@dataclasses.dataclass
class Split:
    """Row indices into a Dataset's interaction arrays.

    Attributes:
      name: the split strategy.
      train, valid, test: int64 row indices, disjoint.
      cold_items: int32 item ids absent from train (empty unless cold_items).
      time_rank: [num_interactions] int64, each row's position in time order
        (ties broken as time_order says); None: by timestamp, then item id.
    """

    name: str
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    cold_items: np.ndarray
    time_rank: np.ndarray | None = None


def time_order(dataset: Dataset, tie_order: str, seed: int) -> np.ndarray:
    """[num_interactions] int64: each row's rank in time (0 = earliest).

    Rows with the same timestamp are ordered by a permutation drawn from
    (seed, 0x7153) for tie_order="random", by item id for "item_id".
    """
    if tie_order not in TIE_ORDERS:
        raise errors.ConfigError(f"config.data.tie_order={tie_order!r}: use one of {TIE_ORDERS}")
    n = dataset.num_interactions
    if tie_order == "random":
        tie = np.random.default_rng([seed, 0x7153]).permutation(n)
    else:
        tie = dataset.item
    order = np.lexsort((tie, dataset.timestamp))
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    return rank


def make_split(dataset: Dataset, name: str, seed: int, cold_fraction: float = 0.1,
               ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
               train_fraction: float = 1.0, tie_order: str = "random",
               window: tuple[int, int] | None = None) -> Split:
    """Splits a dataset.

    Args:
      dataset: the interactions.
      name: one of SPLITS.
      seed: seeds every random choice; the same seed gives the same split.
      cold_fraction: share of items held out of training for ``cold_items``.
      ratios: train/valid/test shares for ``ratio`` (and warm rows of ``cold_items``).
      train_fraction: share of each user's training rows to keep (>= 1 row).
      tie_order: how rows with equal timestamps are ordered (TIE_ORDERS).
      window: (start, end) unix seconds of the test period for ``window``.

    Returns:
      The split.
    """
    if name not in SPLITS:
        raise errors.ConfigError(f"config.data.split={name!r}: use one of {SPLITS}")
    if not 0.0 < train_fraction <= 1.0:
        raise errors.ConfigError(
            f"config.data.train_fraction must be in (0, 1], got {train_fraction}")
    rank = time_order(dataset, tie_order, seed)
    rng = np.random.default_rng(seed)
    cold = np.zeros(0, np.int32)
    if name == "loo_time":
        train, valid, test = _leave_one_out_by_time(dataset, rank)
    elif name == "window":
        if window is None or not window[0] < window[1]:
            raise errors.ConfigError(f"split 'window' needs a (start, end) period, got {window}")
        train, valid, test = _time_window(dataset, rank, *window)
    elif name == "ratio":
        train, valid, test = _ratio_per_user(dataset.user, np.arange(dataset.num_interactions),
                                             ratios, rng)
    else:
        if not 0.0 < cold_fraction < 1.0:
            raise errors.ConfigError(
                f"config.data.cold_fraction must be in (0, 1), got {cold_fraction}")
        num_cold = max(1, int(round(cold_fraction * dataset.num_items)))
        cold = np.sort(rng.choice(dataset.num_items, num_cold, replace=False)).astype(np.int32)
        is_cold = np.isin(dataset.item, cold)
        warm_rows, cold_rows = np.flatnonzero(~is_cold), np.flatnonzero(is_cold)
        train, valid, test = _ratio_per_user(dataset.user[warm_rows], warm_rows, ratios, rng)
        to_valid = rng.random(len(cold_rows)) < 0.5
        valid = np.sort(np.concatenate([valid, cold_rows[to_valid]]))
        test = np.sort(np.concatenate([test, cold_rows[~to_valid]]))
    if train_fraction < 1.0:
        train = _keep_fraction_per_user(dataset.user, train, train_fraction,
                                        np.random.default_rng([seed, 1]))
    return Split(name, train, valid, test, cold, rank)


def _group_rows(users: np.ndarray, rows: np.ndarray):
    """Yields each user's rows (in the given order)."""
    order = np.argsort(users, kind="stable")
    bounds = np.flatnonzero(np.diff(users[order])) + 1
    return np.split(rows[order], bounds)


def _leave_one_out_by_time(dataset: Dataset, rank: np.ndarray):
    train, valid, test = [], [], []
    for rows in _group_rows(dataset.user, np.arange(dataset.num_interactions)):
        rows = rows[np.argsort(rank[rows], kind="stable")]
        if len(rows) >= 3:
            train.append(rows[:-2])
            valid.append(rows[-2:-1])
            test.append(rows[-1:])
        else:  # Too short to hold anything out.
            train.append(rows)
    return (np.concatenate(train), np.concatenate(valid or [np.zeros(0, np.int64)]),
            np.concatenate(test or [np.zeros(0, np.int64)]))


def _time_window(dataset: Dataset, rank: np.ndarray, start: int, end: int):
    before = np.flatnonzero(dataset.timestamp < start)
    train, valid = [], []
    for rows in _group_rows(dataset.user[before], before):
        rows = rows[np.argsort(rank[rows], kind="stable")]
        train.append(rows[:-1] if len(rows) >= 2 else rows)
        valid.append(rows[-1:] if len(rows) >= 2 else rows[:0])
    empty = [np.zeros(0, np.int64)]
    train, valid = np.sort(np.concatenate(train or empty)), np.sort(np.concatenate(valid or empty))
    known = np.zeros(dataset.num_users, bool)
    known[dataset.user[train]] = True
    within = (dataset.timestamp >= start) & (dataset.timestamp < end)
    test = np.flatnonzero(within & known[dataset.user])  # new users: no ID model can serve them
    return train.astype(np.int64), valid.astype(np.int64), test.astype(np.int64)


def window_bounds(edges: str, window: int) -> tuple[int, int]:
    """(start, end) unix seconds of window `window` of comma-separated UTC dates."""
    import datetime

    try:
        stamps = [int(datetime.datetime.strptime(e.strip(), "%Y-%m-%d").replace(
            tzinfo=datetime.timezone.utc).timestamp()) for e in edges.split(",") if e.strip()]
    except ValueError as e:
        raise errors.ConfigError(f"config.data.window_edges={edges!r}: {e}") from None
    if any(b <= a for a, b in zip(stamps, stamps[1:])):
        raise errors.ConfigError(f"config.data.window_edges={edges!r}: dates must ascend")
    if not 0 <= window < len(stamps) - 1:
        raise errors.ConfigError(f"config.data.window={window}: use 0..{len(stamps) - 2} "
                                 f"for {len(stamps)} window_edges")
    return stamps[window], stamps[window + 1]


def _ratio_per_user(users, rows, ratios, rng):
    train, valid, test = [], [], []
    total = sum(ratios)
    for user_rows in _group_rows(users, rows):
        user_rows = rng.permutation(user_rows)
        n = len(user_rows)
        n_valid = int(round(n * ratios[1] / total))
        n_test = int(round(n * ratios[2] / total))
        n_train = n - n_valid - n_test
        if n_train < 1:  # Keep at least one training row per user.
            n_train, n_valid, n_test = n, 0, 0
        train.append(user_rows[:n_train])
        valid.append(user_rows[n_train:n_train + n_valid])
        test.append(user_rows[n_train + n_valid:])
    return tuple(np.sort(np.concatenate(p)).astype(np.int64) for p in (train, valid, test))


def _keep_fraction_per_user(users, train_rows, fraction, rng):
    kept = []
    for rows in _group_rows(users[train_rows], train_rows):
        keep = max(1, int(round(fraction * len(rows))))
        kept.append(rng.choice(rows, keep, replace=False))
    return np.sort(np.concatenate(kept)).astype(np.int64)


def write_csv(dataset: Dataset, split: Split, folder: str) -> None:
    """Writes <folder>/{train,valid,test}.csv with original ids."""
    os.makedirs(folder, exist_ok=True)
    for part in ("train", "valid", "test"):
        rows = getattr(split, part)
        path = os.path.join(folder, f"{part}.csv")
        with open(path + ".tmp", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["user_id", "item_id", "rating", "timestamp"])
            w.writerows(zip(dataset.user_ids[dataset.user[rows]],
                            dataset.item_ids[dataset.item[rows]],
                            (f"{r:g}" for r in dataset.rating[rows]),
                            dataset.timestamp[rows]))
        os.replace(path + ".tmp", path)
    if len(split.cold_items):
        with open(os.path.join(folder, "cold_items.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["item_id"])
            w.writerows([i] for i in dataset.item_ids[split.cold_items])
