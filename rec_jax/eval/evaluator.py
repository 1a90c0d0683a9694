"""Full-ranking evaluation over all items, batched and jitted over users.

For each user with held-out items in the evaluated part, every item is
scored; items the user already revealed (training items, and validation items
when testing) are pushed to -inf so they can neither hit nor take a slot,
the top K are taken on device, and metric sums are accumulated per segment:

* ``all``: every held-out item;
* ``head`` / ``tail``: held-out items among the top 20% of items by training
  popularity / the rest;
* ``cold``: held-out items that never appear in training (cold_items split);
* ``cold_only``: a second ranking restricted to cold items (how well the model
  orders new items among themselves).

Segment metrics rank among all items and count only users with at least one
held-out item in the segment.
"""

from __future__ import annotations

import csv
import functools
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from rec_jax.data.interactions import SplitData
from rec_jax.eval import metrics as metrics_lib
from rec_jax.spec import QueryFn

ScoreFn = Callable[[Any, dict, Any], jnp.ndarray]  # (params, query, side) -> [B, I]


class Evaluator:
    """Evaluates one part (valid or test) of a split.

    Args:
      data: the split data.
      part: "valid" or "test".
      ks: metric cut-offs.
      batch_users: users per jitted batch (the last batch is padded).
      num_recs: how many recommendations per user are kept for recs CSVs.
      users: evaluate only these users (None: every user with a held-out item).
    """

    def __init__(self, data: SplitData, part: str, ks=(10, 20), batch_users: int = 256,
                 num_recs: int = 20, users: np.ndarray | None = None):
        if part not in ("valid", "test"):
            raise ValueError(f"part must be 'valid' or 'test', got {part!r}")
        self.data, self.part, self.ks = data, part, tuple(ks)
        self.max_k = max(max(self.ks), num_recs)
        self.truth = getattr(data, part)
        self.known = data.known_items(part)
        self.users = np.flatnonzero(self.truth.lengths() > 0).astype(np.int32)
        if users is not None:  # a subset (e.g. the half of the users a model selects on)
            self.users = np.intersect1d(self.users, users).astype(np.int32)
        self.batch_users = int(min(batch_users, max(len(self.users), 1)))
        self.segments = {"head": data.head_items, "tail": ~data.head_items}
        if data.cold_items.any():
            self.segments["cold"] = data.cold_items
        # A user segment (item segments above): users whose test items all come
        # strictly later in time than their validation items. On `loo_time` the
        # rest are users whose last two ratings share a timestamp, where which
        # one is "test" is decided by the split's tie order, not by the data.
        self.strict_users = strictly_later_users(data) if part == "test" else None
        self.num_recs = num_recs

    def batches(self):
        """Yields (users [B], user_mask [B]) with the last batch padded."""
        b = self.batch_users
        for lo in range(0, len(self.users), b):
            users = self.users[lo:lo + b]
            mask = np.ones(b, np.bool_)
            if len(users) < b:
                mask[len(users):] = False
                users = np.concatenate([users, np.full(b - len(users), users[0], np.int32)])
            yield users, mask

    def evaluate(self, score_fn: ScoreFn, params, side, make_query: QueryFn,
                 keep_recs: bool = True) -> tuple[dict[str, float], dict[str, np.ndarray] | None]:
        """Scores every evaluated user against the full catalog.

        Returns:
          (metrics, recs): metrics flat as {"ndcg@10": ..., "tail/ndcg@10": ...},
          recs {"user": [n], "items": [n, num_recs], "scores": [n, num_recs]}.
        """
        rank = _ranker(score_fn, self.ks, self.max_k, tuple(self.segments),
                       "cold" in self.segments)
        seg_masks = {k: jnp.asarray(v) for k, v in self.segments.items()}

        def rank_batch(users, mask):
            query = make_query(users, self.part)
            exclude = self.known.dense(users)
            truth = self.truth.dense(users)
            return rank(params, query, side, exclude, truth, mask, seg_masks)

        return self._collect(rank_batch, keep_recs)

    def _collect(self, rank_batch, keep_recs: bool):
        """Runs rank_batch(users, mask) -> (sums, top_items, top_scores) over every
        batch of users; returns the finalized metrics and (optionally) the recs."""
        totals: dict[str, float] = {}
        rec_users, rec_items, rec_scores, per_user = [], [], [], []
        for users, mask in self.batches():
            sums, top_items, top_scores = rank_batch(users, mask)
            for k, v in jax.device_get(sums).items():
                totals[k] = totals.get(k, 0.0) + float(v)
            n = int(mask.sum())
            if keep_recs or self.strict_users is not None:
                # Per-user values, on the host from the top-K (the final
                # evaluation only): for paired tests and the strict segment.
                values = self._per_user(np.asarray(top_items)[:n], users[:n])
                per_user.append(values)
                if self.strict_users is not None:
                    names = self._metric_names()
                    weight = self.strict_users[users[:n]] & ~np.isnan(values[names[0]])
                    totals["strict/users"] = totals.get("strict/users", 0.0) + weight.sum()
                    for k in names:
                        v = np.nan_to_num(values[k])
                        totals[f"strict/{k}"] = totals.get(f"strict/{k}", 0.0) + (v * weight).sum()
            if keep_recs:
                rec_users.append(users[:n])
                rec_items.append(np.asarray(top_items)[:n, :self.num_recs])
                rec_scores.append(np.asarray(top_scores)[:n, :self.num_recs])
        result = _finalize_segments(totals)
        recs = None
        if keep_recs and rec_users:
            recs = {"user": np.concatenate(rec_users), "items": np.concatenate(rec_items),
                    "scores": np.concatenate(rec_scores),
                    "per_user": {k: np.concatenate([v[k] for v in per_user])
                                 for k in per_user[0]}}
        return result, recs

    def _metric_names(self) -> list[str]:
        return [f"{m}@{k}" for k in self.ks for m in metrics_lib.RANKING_METRICS]

    def _per_user(self, top_items: np.ndarray, users: np.ndarray) -> dict[str, np.ndarray]:
        """{"ndcg@10": [n], ..., "tail/ndcg@10": [n], ...}: NaN where a user has no
        held-out item (in the segment)."""
        truth = self.truth.dense(users)
        out = {}
        for prefix, seg in [("", None), *self.segments.items()]:
            relevant = truth if seg is None else truth & seg[None]
            values, counted = metrics_lib.per_user(top_items, relevant, self.ks, xp=np)
            counted = np.asarray(counted)
            for k, v in values.items():
                out[prefix + ("/" if prefix else "") + k] = np.where(counted, np.asarray(v),
                                                                     np.nan)
        return out

    def write_recs(self, recs: dict[str, np.ndarray], folder: str) -> None:
        """Writes recs_<part>.csv (original ids, top num_recs), truth_<part>.csv and
        per_user_<part>.npz (original user ids, each ranking metric per user)."""
        d = self.data.dataset
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"per_user_{self.part}.npz")
        np.savez(path + ".tmp.npz", user_id=d.user_ids[recs["user"]], **recs["per_user"])
        os.replace(path + ".tmp.npz", path)
        path = os.path.join(folder, f"recs_{self.part}.csv")
        with open(path + ".tmp", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["user_id", "rank", "item_id", "score"])
            for u, items, scores in zip(recs["user"], recs["items"], recs["scores"]):
                for r, (i, s) in enumerate(zip(items, scores), start=1):
                    w.writerow([d.user_ids[u], r, d.item_ids[i], f"{s:.6g}"])
        os.replace(path + ".tmp", path)
        path = os.path.join(folder, f"truth_{self.part}.csv")
        with open(path + ".tmp", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["user_id", "item_id"])
            for u in self.users:
                w.writerows([d.user_ids[u], d.item_ids[i]] for i in self.truth.row(u))
        os.replace(path + ".tmp", path)


@functools.lru_cache(maxsize=64)
def _ranker(score_fn, ks, max_k, segment_names, with_cold_only):
    """One jitted function: score, mask, top-K, and metric sums per segment."""

    @jax.jit
    def rank(params, query, side, exclude, truth, user_mask, seg_masks):
        scores = score_fn(params, query, side).astype(jnp.float32)
        scores = jnp.where(exclude, -jnp.inf, scores)
        top_scores, top_items = jax.lax.top_k(scores, max_k)
        sums = metrics_lib.ranking_sums(top_items, truth, ks, user_mask)
        for name in segment_names:
            seg = metrics_lib.ranking_sums(top_items, truth & seg_masks[name][None], ks, user_mask)
            sums.update({f"{name}/{k}": v for k, v in seg.items()})
        if with_cold_only:
            cold = seg_masks["cold"][None]
            _, cold_top = jax.lax.top_k(jnp.where(cold, scores, -jnp.inf), max_k)
            seg = metrics_lib.ranking_sums(cold_top, truth & cold, ks, user_mask)
            sums.update({f"cold_only/{k}": v for k, v in seg.items()})
        return sums, top_items, top_scores

    return rank


def strictly_later_users(data: SplitData) -> np.ndarray:
    """[num_users] bool: users with valid and test items whose every test
    interaction is strictly later (in timestamp) than every validation one."""
    d, split = data.dataset, data.split
    last_valid = np.full(d.num_users, np.iinfo(np.int64).max)
    has_valid = np.zeros(d.num_users, np.bool_)
    has_valid[d.user[split.valid]] = True
    last_valid[has_valid] = np.iinfo(np.int64).min
    np.maximum.at(last_valid, d.user[split.valid], d.timestamp[split.valid])
    first_test = np.full(d.num_users, np.iinfo(np.int64).min)
    has_test = np.zeros(d.num_users, np.bool_)
    has_test[d.user[split.test]] = True
    first_test[has_test] = np.iinfo(np.int64).max
    np.minimum.at(first_test, d.user[split.test], d.timestamp[split.test])
    return has_valid & has_test & (first_test > last_valid)


def _finalize_segments(totals: dict[str, float]) -> dict[str, float]:
    groups: dict[str, dict[str, float]] = {}
    for key, value in totals.items():
        prefix, _, name = key.rpartition("/")
        groups.setdefault(prefix, {})[name] = value
    out = {}
    for prefix, sums in groups.items():
        for name, value in metrics_lib.finalize(sums).items():
            out[f"{prefix}/{name}" if prefix else name] = value
    return out


def ctr_metrics(logit_fn: Callable, make_query: QueryFn, params, side, data: SplitData,
                part: str, threshold: float = 4.0, batch_size: int = 4096) -> dict[str, float]:
    """AUC and LogLoss on the rated pairs of a part (label: rating >= threshold).

    Args:
      logit_fn: (params, query, items [B], side) -> logits [B], where query =
        make_query(users [B], part) describes each pair's user.
    """
    rows = data.rows(part)
    users = data.dataset.user[rows].astype(np.int32)
    items = data.dataset.item[rows].astype(np.int32)
    labels = data.dataset.rating[rows] >= threshold
    fn = jax.jit(logit_fn)
    logits = []
    for lo in range(0, len(rows), batch_size):
        u, i = users[lo:lo + batch_size], items[lo:lo + batch_size]
        n = len(u)
        if n < batch_size:  # Pad to one compiled shape.
            u = np.pad(u, (0, batch_size - n))
            i = np.pad(i, (0, batch_size - n))
        logits.append(np.asarray(fn(params, make_query(u, part), i, side))[:n])
    logits = np.concatenate(logits) if logits else np.zeros(0)
    return {"auc": metrics_lib.auc(labels, logits), "logloss": metrics_lib.logloss(labels, logits),
            "pairs": float(len(rows))}
