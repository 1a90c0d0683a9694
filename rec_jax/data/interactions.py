"""Per-user views of a split: item sets, time-ordered histories, popularity.

Everything a trainer or evaluator asks of "which items does user u have in
train / valid / test" lives here, computed once per run with numpy.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rec_jax.data.dataset import Dataset
from rec_jax.data.splits import Split


@dataclasses.dataclass
class CSR:
    """Per-user item lists: user u owns indices[indptr[u]:indptr[u+1]]."""

    indptr: np.ndarray  # [num_users + 1] int64
    indices: np.ndarray  # [nnz] int32
    num_items: int
    values: np.ndarray | None = None  # [nnz] aligned with indices (ratings)
    rows: np.ndarray | None = None  # [nnz] dataset row of each entry

    @classmethod
    def from_rows(cls, users: np.ndarray, items: np.ndarray, num_users: int, num_items: int,
                  sort_key: np.ndarray | None = None, values: np.ndarray | None = None,
                  rows: np.ndarray | None = None) -> "CSR":
        """Groups (user, item) pairs by user; within a user, by sort_key or item id."""
        key = items if sort_key is None else sort_key
        order = np.lexsort((items, key, users))
        counts = np.bincount(users, minlength=num_users)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(indptr, items[order].astype(np.int32), num_items,
                   None if values is None else values[order],
                   None if rows is None else rows[order])

    def row(self, user: int) -> np.ndarray:
        return self.indices[self.indptr[user]:self.indptr[user + 1]]

    def row_values(self, user: int) -> np.ndarray:
        return self.values[self.indptr[user]:self.indptr[user + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def pair_keys(self) -> np.ndarray:
        """Sorted int64 keys user * num_items + item, for vectorised membership."""
        users = np.repeat(np.arange(len(self.indptr) - 1, dtype=np.int64), self.lengths())
        return np.sort(users * self.num_items + self.indices)

    def dense(self, users: np.ndarray) -> np.ndarray:
        """[len(users), num_items] bool mask of the given users' items."""
        mask = np.zeros((len(users), self.num_items), np.bool_)
        lengths = self.lengths()[users]
        rows = np.repeat(np.arange(len(users)), lengths)
        cols = np.concatenate([self.row(u) for u in users]) if len(users) else np.zeros(0, int)
        mask[rows, cols] = True
        return mask


def contains(sorted_keys: np.ndarray, num_items: int, users: np.ndarray,
             items: np.ndarray) -> np.ndarray:
    """Whether each (user, item) pair is among the sorted pair keys."""
    keys = users.astype(np.int64) * num_items + items
    pos = np.searchsorted(sorted_keys, keys)
    pos = np.minimum(pos, len(sorted_keys) - 1)
    return sorted_keys[pos] == keys if len(sorted_keys) else np.zeros(keys.shape, np.bool_)


@dataclasses.dataclass
class SplitData:
    """A dataset seen through a split.

    Attributes:
      dataset, split: the source.
      train, valid, test: CSR per user; train rows in time order (histories).
      train_keys: sorted pair keys of train, for negative sampling.
      item_popularity: [num_items] training interaction counts.
      head_items: bool [num_items], top 20% of items by training popularity.
      cold_items: bool [num_items].
    """

    dataset: Dataset
    split: Split
    train: CSR
    valid: CSR
    test: CSR
    train_keys: np.ndarray
    item_popularity: np.ndarray
    head_items: np.ndarray
    cold_items: np.ndarray

    @property
    def num_users(self) -> int:
        return self.dataset.num_users

    @property
    def num_items(self) -> int:
        return self.dataset.num_items

    def rows(self, part: str) -> np.ndarray:
        return getattr(self.split, part)

    def history(self, user: int, include_valid: bool) -> np.ndarray:
        """The user's items in time order: train, then valid when asked."""
        h = self.train.row(user)
        return np.concatenate([h, self.valid.row(user)]) if include_valid else h

    def history_window(self, users: np.ndarray, part: str, max_len: int) -> np.ndarray:
        """[len(users), max_len] latest history items, left-padded with -1.

        For `valid` (and for training-time queries, part="train") the history
        is the training items; for `test` the validation items follow them.
        """
        out = np.full((len(users), max_len), -1, np.int32)
        for k, u in enumerate(users):
            h = self.history(int(u), include_valid=(part == "test"))[-max_len:]
            if len(h):
                out[k, max_len - len(h):] = h
        return out

    def known_items(self, part: str) -> CSR:
        """Items excluded from ranking when evaluating `part`.

        Training items for valid; training and validation items for test (the
        user already revealed them, so recommending them again is no hit).
        """
        if part == "valid":
            return self.train
        users = np.concatenate([self._users("train"), self._users("valid")])
        items = np.concatenate([self.dataset.item[self.split.train],
                                self.dataset.item[self.split.valid]])
        return CSR.from_rows(users, items, self.num_users, self.num_items)

    def _users(self, part):
        return self.dataset.user[getattr(self.split, part)]


def build(dataset: Dataset, split: Split, head_share: float = 0.2) -> SplitData:
    """Builds the per-user views of a split."""
    d = dataset

    # Histories follow the split's time order (ties broken as the split says,
    # the same order that chose its loo_time hold-outs).
    time_key = d.timestamp if split.time_rank is None else split.time_rank

    def csr(rows, by_time):
        return CSR.from_rows(d.user[rows], d.item[rows], d.num_users, d.num_items,
                             sort_key=time_key[rows] if by_time else None,
                             values=d.rating[rows], rows=rows)

    train = csr(split.train, by_time=True)
    popularity = np.bincount(d.item[split.train], minlength=d.num_items)
    # Head = top `head_share` of items by training popularity (ties by id).
    num_head = int(round(head_share * d.num_items))
    head = np.zeros(d.num_items, np.bool_)
    head[np.argsort(-popularity, kind="stable")[:num_head]] = True
    cold = np.zeros(d.num_items, np.bool_)
    cold[split.cold_items] = True
    return SplitData(d, split, train, csr(split.valid, True), csr(split.test, True),
                     train.pair_keys(), popularity, head, cold)
