"""Top-K ranking and CTR metrics as pure functions returning sums and counts.

Definitions follow RecBole, so numbers compare with its tables:

* Recall@k = hits in the top k / number of relevant items;
* NDCG@k = DCG@k / IDCG@k, binary relevance, IDCG over min(relevant, k) hits;
* HR@k = 1 if any relevant item is in the top k;
* MRR@k = 1 / rank of the first relevant item in the top k (0 if none).

Each function returns per-metric *sums over users* and the user count, so
batches (and devices, and hosts) add up exactly; the host divides once.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

RANKING_METRICS = ("recall", "ndcg", "hr", "mrr")


def per_user(top_items, truth, ks: tuple[int, ...], xp=jnp) -> tuple[dict, object]:
    """Per-user ranking metrics (the values paired tests compare user by user).

    Args:
      top_items: [batch, max_k] item ids, best first.
      truth: [batch, num_items] bool, the relevant items of each user.
      ks: cut-offs, each <= max_k.
      xp: the array module: jax.numpy inside jitted code (the default), numpy
        for host arrays (no device round trip per batch).

    Returns:
      ({"recall@k": [batch], "ndcg@k": [batch], "hr@k": [batch], "mrr@k": [batch], ...},
       [batch] bool: users with at least one relevant item).
    """
    hits = xp.take_along_axis(truth, top_items, axis=1).astype(xp.float32)
    num_relevant = truth.sum(axis=1)
    max_k = top_items.shape[1]
    # Position j (0-based) is discounted by 1/log2(j + 2).
    discount = 1.0 / xp.log2(xp.arange(max_k, dtype=xp.float32) + 2.0)
    ideal_dcg = xp.concatenate([xp.zeros(1, xp.float32), xp.cumsum(discount)])
    out = {}
    for k in ks:
        h = hits[:, :k]
        num_hits = h.sum(axis=1)
        out[f"recall@{k}"] = num_hits / xp.maximum(num_relevant, 1)
        dcg = (h * discount[:k]).sum(axis=1)
        out[f"ndcg@{k}"] = dcg / ideal_dcg[xp.minimum(num_relevant, k)].clip(min=1e-12)
        out[f"hr@{k}"] = (num_hits > 0).astype(xp.float32)
        # The first hit has the largest h_j / (j + 1) among hits.
        out[f"mrr@{k}"] = (h / xp.arange(1, k + 1, dtype=xp.float32)).max(axis=1)
    return out, num_relevant > 0


def ranking_sums(top_items: jnp.ndarray, truth: jnp.ndarray, ks: tuple[int, ...],
                 user_mask: jnp.ndarray | None = None) -> dict[str, jnp.ndarray]:
    """Sums of per-user ranking metrics.

    Args:
      top_items: [batch, max_k] item ids, best first.
      truth: [batch, num_items] bool, the relevant items of each user.
      ks: cut-offs, each <= max_k.
      user_mask: [batch] bool, users to count (padding rows are False).

    Returns:
      {"recall@k": sum, "ndcg@k": sum, "hr@k": sum, "mrr@k": sum, ..., "users": count}
      over users with at least one relevant item.
    """
    values, counted = per_user(top_items, truth, ks)
    if user_mask is not None:
        counted = counted & user_mask
    weight = counted.astype(jnp.float32)
    out = {"users": weight.sum()}
    for k in ks:
        for name in RANKING_METRICS:
            out[f"{name}@{k}"] = (values[f"{name}@{k}"] * weight).sum()
    return out


def finalize(sums: dict[str, float]) -> dict[str, float]:
    """Divides metric sums by their user count; keeps the count as `users`."""
    users = float(sums["users"])
    return {k: (float(v) / users if users else float("nan")) if k != "users" else users
            for k, v in sums.items()}


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum formula, ties averaged."""
    labels = np.asarray(labels, bool)
    scores = np.asarray(scores, np.float64)
    num_pos, num_neg = labels.sum(), (~labels).sum()
    if num_pos == 0 or num_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), np.float64)
    # Average ranks over groups of tied scores.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(scores)]])
    avg = (starts + ends + 1) / 2.0  # 1-based average rank of each tie group
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[labels].sum() - num_pos * (num_pos + 1) / 2) / (num_pos * num_neg))


def logloss(labels: np.ndarray, logits: np.ndarray) -> float:
    """Mean binary cross-entropy of logits, computed stably."""
    labels = np.asarray(labels, np.float64)
    logits = np.asarray(logits, np.float64)
    return float(np.mean(np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))))
