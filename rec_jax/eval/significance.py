"""Paired tests over users: is model A better than model B on the same users?

Every evaluation writes ``<model>/per_user_<part>.npz`` (original user ids and
each ranking metric per user, NaN where the user has no held-out item of that
segment). Two models are compared user by user; over several seeds the pairs
of every seed are pooled (each seed pairs a model with its own twin of the
same seed), so a gain must hold across users and seeds to be significant.

Both a paired t-test and the Wilcoxon signed-rank test are reported: per-user
NDCG is far from normal (most users score 0 at k=10), so the rank test is the
one to trust when they disagree.
"""

from __future__ import annotations

import os

import numpy as np
from scipy import stats


def load_per_user(folder: str, part: str = "test") -> dict[str, np.ndarray]:
    """A model folder's per-user values: {"user_id": [n], "ndcg@10": [n], ...}."""
    path = os.path.join(folder, f"per_user_{part}.npz")
    with np.load(path, allow_pickle=False) as f:
        return dict(f)


def paired_values(a: dict[str, np.ndarray], b: dict[str, np.ndarray], metric: str
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The metric of the users both evaluated (and both count), aligned by user id."""
    index_b = {u: k for k, u in enumerate(b["user_id"].tolist())}
    pairs = [(k, index_b[u]) for k, u in enumerate(a["user_id"].tolist()) if u in index_b]
    ia = np.array([p[0] for p in pairs], np.int64)
    ib = np.array([p[1] for p in pairs], np.int64)
    x, y = a[metric][ia], b[metric][ib]
    keep = ~(np.isnan(x) | np.isnan(y))
    return x[keep], y[keep]


def paired_test(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Paired comparison of per-user values x (model A) and y (model B).

    Returns:
      n (pairs), mean_a, mean_b, diff (mean of x - y), rel (mean_a / mean_b - 1),
      p_t (two-sided paired t-test), p_wilcoxon (two-sided signed-rank test;
      zero differences dropped, as most users tie at 0).
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = len(x)
    out = {"n": float(n), "mean_a": float(x.mean()) if n else float("nan"),
           "mean_b": float(y.mean()) if n else float("nan")}
    out["diff"] = out["mean_a"] - out["mean_b"]
    out["rel"] = out["mean_a"] / out["mean_b"] - 1.0 if out["mean_b"] else float("nan")
    d = x - y
    if n < 2 or not np.any(d):
        out["p_t"] = out["p_wilcoxon"] = 1.0 if n else float("nan")
        return out
    # A constant non-zero difference has no spread: certain, and a t-test
    # would divide by (rounding noise around) zero.
    constant = np.allclose(d, d.mean(), rtol=0.0, atol=1e-12)
    out["p_t"] = 0.0 if constant else float(stats.ttest_rel(x, y).pvalue)
    out["p_wilcoxon"] = float(stats.wilcoxon(x, y, zero_method="wilcox").pvalue)
    return out


def pooled_test(pairs: list[tuple[dict, dict]], metric: str) -> dict[str, float]:
    """paired_test over the user pairs of several runs (e.g. one per seed), pooled."""
    xs, ys = [], []
    for a, b in pairs:
        x, y = paired_values(a, b, metric)
        xs.append(x)
        ys.append(y)
    if not xs:
        return paired_test(np.zeros(0), np.zeros(0))
    return paired_test(np.concatenate(xs), np.concatenate(ys))


def format_p(p: float) -> str:
    """A p-value for a table: 3 significant digits, or "<1e-4"."""
    if p != p:  # NaN
        return "—"
    return "<1e-4" if p < 1e-4 else f"{p:.3g}"
