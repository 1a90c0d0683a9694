"""Approximate top-K retrieval (FAISS IVF) for catalogues too large to rank exactly.

``config.eval.retrieval`` picks how a dot-product model (a user tower and an
item table: MF, SASRec) is ranked:

* ``"exact"`` (default): every item is scored (:class:`Evaluator`,
  :class:`ShardedEvaluator`); the numbers of the protocol.
* ``"ivf"`` or ``"ivf:nlist=2048,nprobe=16"``: an inverted-file index
  (FAISS ``IndexIVFFlat``, inner product). Items are clustered into ``nlist``
  k-means cells; a user scores the ``nlist`` centroids, then only the items
  of its ``nprobe`` best cells, with exact float32 inner products (no
  quantisation: what is scanned is scored exactly, what is missed is
  missed). ``nlist`` defaults to about 2 sqrt(N) (2,048 at 1M items),
  ``nprobe`` to 16, i.e. about 0.8% of a 1M catalogue is scanned.

The item bias of MF is folded into the vectors (user [u, 1], item [v, b]),
so the index ranks by exactly the model's score ``u . v + b``.

**Known items.** The protocol never recommends a user's training (and, at
test time, validation) items. An index cannot skip per-user lists inside one
batched search, so :meth:`ItemIndex.search` asks it for ``k + e`` candidates,
``e`` the user's known-item count rounded up to a power of two, and drops
the known ones: at most ``e`` of the candidates are known, so at least ``k``
remain whenever the probed cells hold ``k + e`` items. Users are grouped by
``e`` (one index call per group), so one heavy user does not make the whole
batch fetch thousands of candidates, and the power of two bounds the calls to
log2(longest list) per batch. A user still left with fewer than ``k`` (the
probed cells were too small, as on a tiny catalogue) is ranked exactly, and
counted in :attr:`ItemIndex.stats`.

:class:`AnnEvaluator` is the full-ranking evaluator on such an index: same
users, segments, metrics and recs as :class:`Evaluator`. The index is built
from the current params at every ``evaluate`` call (a validation pass during
training pays a build; at 1M items about a minute on two cores), and it is
single-host (the table is gathered to the host).
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from rec_jax import errors
from rec_jax.data.interactions import SplitData
from rec_jax.eval.evaluator import Evaluator
from rec_jax.eval.sharded import _sharded_sums, known_item_ids

KINDS = ("exact", "ivf")
FORMS = "'exact' or 'ivf[:nlist=N,nprobe=P]' (e.g. 'ivf:nlist=2048,nprobe=16')"
# k-means training points per cell: FAISS warns below 39; 50 trains a 1M,
# 2,048-cell index on ~100k points (about half a minute here, ten iterations).
TRAIN_POINTS_PER_CELL = 50
KMEANS_ITERATIONS = 10


@dataclasses.dataclass(frozen=True)
class Retrieval:
    """``config.eval.retrieval`` parsed once.

    Attributes:
      kind: "exact" or "ivf".
      nlist: IVF cells (0: about 2 sqrt(num_items), see :func:`default_nlist`).
      nprobe: cells scanned per user (at most nlist).
    """

    kind: str = "exact"
    nlist: int = 0
    nprobe: int = 16

    @classmethod
    def parse(cls, text: str, key: str = "config.eval.retrieval") -> "Retrieval":
        kind, _, options = str(text).strip().partition(":")
        if kind not in KINDS:
            raise errors.ConfigError(f"{key}={text!r}: use {FORMS}")
        if kind == "exact":
            if options:
                raise errors.ConfigError(f"{key}={text!r}: 'exact' takes no options")
            return cls()
        values = {}
        for option in filter(None, (o.strip() for o in options.split(","))):
            name, eq, value = option.partition("=")
            if name not in ("nlist", "nprobe") or not eq or not value.isdigit():
                raise errors.ConfigError(f"{key}={text!r}: bad option {option!r}; use {FORMS}")
            values[name] = int(value)
        if values.get("nprobe", 1) < 1:
            raise errors.ConfigError(f"{key}={text!r}: nprobe must be >= 1")
        return cls(kind, **values)

    @property
    def exact(self) -> bool:
        return self.kind == "exact"


def default_nlist(num_items: int) -> int:
    """About 2 sqrt(N) cells, a power of two (2,048 at 1M items), and at most N / 39
    (FAISS's fewest k-means points per cell)."""
    cells = 2 ** int(round(np.log2(max(2.0 * np.sqrt(num_items), 1.0))))
    return int(max(1, min(cells, num_items // 39)))


def _bucket(lengths: np.ndarray) -> np.ndarray:
    """0 for 0, else the smallest power of two >= each length."""
    out = np.zeros_like(lengths)
    nz = lengths > 0
    out[nz] = 1 << np.ceil(np.log2(lengths[nz])).astype(lengths.dtype)
    return out


def _faiss():
    try:
        import faiss
    except ImportError as e:
        raise errors.ConfigError("config.eval.retrieval='ivf' needs FAISS: "
                                 ".venv/bin/pip install faiss-cpu==1.15.1") from e
    return faiss


class ItemIndex:
    """An IVF index over an item table, for top K by ``u . v + b`` with exclusions.

    Args:
      table: [n, d] item vectors.
      bias: [n] item biases, or None.
      retrieval: the index settings (kind "ivf").
      ids: [n] sorted global item ids of the rows (None: 0..n-1), e.g. the
        cold items only.
      num_items: the catalogue size the ids live in (default n); short rows
        are padded with ids outside the index.
      seed: k-means seed (training points and initial centroids).
    """

    def __init__(self, table, bias, retrieval: Retrieval, ids=None, num_items=None, seed=0):
        faiss = _faiss()
        t0 = time.perf_counter()
        self.vectors = item_vectors(table, bias)  # [n, d'] kept for the exact fallback
        n, dim = self.vectors.shape
        self.ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
        self.num_items = n if num_items is None else int(num_items)
        # At most N / 39 cells (FAISS's fewest k-means points per cell), whatever is asked.
        self.nlist = min(retrieval.nlist or default_nlist(n), max(1, n // 39))
        self.nprobe = min(retrieval.nprobe, self.nlist)
        self.index = faiss.index_factory(dim, f"IVF{self.nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.extract_index_ivf(self.index)
        ivf.cp.niter = KMEANS_ITERATIONS
        ivf.cp.seed = seed
        ivf.cp.max_points_per_centroid = TRAIN_POINTS_PER_CELL
        ivf.cp.min_points_per_centroid = min(39, n)  # a table under 39 rows: one cell, no warning
        rng = np.random.default_rng(seed)
        train = self.vectors
        if n > TRAIN_POINTS_PER_CELL * self.nlist:
            train = self.vectors[np.sort(rng.choice(n, TRAIN_POINTS_PER_CELL * self.nlist,
                                                    replace=False))]
        self.index.train(train)
        self.index.add(self.vectors)
        self.build_seconds = time.perf_counter() - t0
        self.set_nprobe(self.nprobe)
        self.stats = {"users": 0, "exact_fallback_users": 0, "candidates": 0}

    def set_nprobe(self, nprobe: int) -> None:
        """Cells scanned per user from now on (at most nlist): recall against speed."""
        self.nprobe = min(int(nprobe), self.nlist)
        _faiss().extract_index_ivf(self.index).nprobe = self.nprobe

    def search(self, user_vecs, k: int, known=None) -> tuple[np.ndarray, np.ndarray]:
        """Top k items per user, known items excluded.

        Args:
          user_vecs: [B, d] user vectors (the bias column is added here).
          k: how many items.
          known: [B, M] int global item ids to exclude per user, -1 = padding
            (None: nothing excluded).

        Returns:
          (scores [B, k] float32, items [B, k] int32), best first. As in the
          exact evaluator, when fewer than k items are left a row ends with
          excluded (or outside-the-index) items scored -inf.
        """
        queries = user_queries(user_vecs, self.vectors.shape[1])
        batch = queries.shape[0]
        known = np.full((batch, 1), -1, np.int64) if known is None else np.asarray(known)
        scores = np.full((batch, k), -np.inf, np.float32)
        items = np.zeros((batch, k), np.int32)
        extra = _bucket((known >= 0).sum(1))
        short = []
        for e in np.unique(extra):
            rows = np.flatnonzero(extra == e)
            fetch = int(min(k + e, len(self.ids)))
            self.stats["candidates"] += fetch * len(rows)
            got_scores, local = self.index.search(queries[rows], fetch)
            got = np.where(local >= 0, self.ids[np.maximum(local, 0)], -1)
            keep = (local >= 0) & ~_member(got, known[rows], self.num_items)
            # First k kept candidates of each row, in the index's (descending) order.
            order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
            ok = keep.sum(1) >= k
            if ok.any():  # (never when the index holds fewer than k items)
                scores[rows[ok]] = np.take_along_axis(got_scores, order, 1)[ok]
                items[rows[ok]] = np.take_along_axis(got, order, 1)[ok]
            short.extend(rows[~ok])
        short = np.asarray(short, np.int64)
        for lo in range(0, len(short), 64):  # 64 rows at a time: [64, n] scores at most
            rows = short[lo:lo + 64]
            scores[rows], items[rows] = self._exact(queries[rows], k, known[rows])
        self.stats["users"] += batch
        self.stats["exact_fallback_users"] += len(short)
        return scores, items

    def _exact(self, queries, k, known):
        """Exact top k over the index's rows (the fallback for rows left short)."""
        scores = queries @ self.vectors.T  # [b, n]
        pos = np.searchsorted(self.ids, np.where(known >= 0, known, -1))
        pos = np.minimum(pos, len(self.ids) - 1)
        hit = (known >= 0) & (self.ids[pos] == known)
        rows = np.broadcast_to(np.arange(len(known))[:, None], known.shape)
        scores[rows[hit], pos[hit]] = -np.inf
        top = exact_top_k(scores, min(k, len(self.ids)))
        out_scores = np.full((len(queries), k), -np.inf, np.float32)
        out_items = np.zeros((len(queries), k), np.int32)
        out_scores[:, :top.shape[1]] = np.take_along_axis(scores, top, 1)
        out_items[:, :top.shape[1]] = self.ids[top]
        if top.shape[1] < k:  # fewer rows than k: pad with ids outside the index (-inf)
            outside = np.setdiff1d(np.arange(min(self.num_items, len(self.ids) + k)), self.ids)
            out_items[:, top.shape[1]:] = outside[:k - top.shape[1]]
        return out_scores, out_items


def item_vectors(table, bias) -> np.ndarray:
    """[n, d (+1)] float32 item rows the index holds: [v, b] when there is a bias."""
    table = np.asarray(table, np.float32)
    if bias is None:
        return np.ascontiguousarray(table)
    return np.ascontiguousarray(np.concatenate([table, np.asarray(bias, np.float32)[:, None]], 1))


def user_queries(user_vecs, dim: int) -> np.ndarray:
    """[B, dim] float32 queries: [u, 1] when the items carry a bias column."""
    user_vecs = np.asarray(user_vecs, np.float32)
    if user_vecs.shape[1] == dim - 1:
        user_vecs = np.concatenate([user_vecs, np.ones((len(user_vecs), 1), np.float32)], 1)
    return np.ascontiguousarray(user_vecs)


def exact_top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """[B, k] column ids of each row's k largest scores, best first (host numpy)."""
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
    return np.take_along_axis(part, order, 1)


def _member(items: np.ndarray, known: np.ndarray, num_items: int) -> np.ndarray:
    """[B, C] bool: items[b, c] is among known[b] (-1 = none), by sorted pair keys."""
    rows = np.arange(len(items), dtype=np.int64)[:, None]
    stride = num_items + 1
    keys = rows * stride + (items.astype(np.int64) + 1)
    known_keys = (rows * stride + (known.astype(np.int64) + 1))[known >= 0]
    return np.isin(keys, known_keys)


# ---------------------------------------------------------------------------
# The full-ranking evaluator on an IVF index.
# ---------------------------------------------------------------------------


class AnnEvaluator(Evaluator):
    """:class:`rec_jax.eval.evaluator.Evaluator` for dot-product models, ranked by an index.

    Same users, batches, segments, metrics and recs as the exact evaluator;
    each batch's top K comes from :meth:`ItemIndex.search` (known items
    excluded as described in the module docstring). ``cold_only`` searches a
    second index over the cold items alone.

    Args:
      data, part, ks, batch_users, num_recs, users: as for Evaluator.
      retrieval: the index settings (kind "ivf").
      user_vectors_fn: (params, query, side) -> [B, d].
      item_table_fn: (params, side) -> ([num_items, d], [num_items] or None).

    After ``evaluate``, :attr:`stats` holds the build seconds, the users
    ranked exactly for lack of candidates, and the mean candidates fetched.
    """

    def __init__(self, data: SplitData, part: str, retrieval: Retrieval, user_vectors_fn,
                 item_table_fn, ks=(10, 20), batch_users: int = 256, num_recs: int = 20,
                 users: np.ndarray | None = None):
        super().__init__(data, part, ks, batch_users, num_recs, users)
        self.retrieval = retrieval
        self.user_vectors_fn = jax.jit(user_vectors_fn)
        self.item_table_fn = jax.jit(item_table_fn)
        self.stats: dict = {}

    def evaluate(self, score_fn, params, side, make_query, keep_recs: bool = True):
        """As Evaluator.evaluate; `score_fn` is unused (the two towers score)."""
        del score_fn
        table, bias = jax.device_get(self.item_table_fn(params, side))
        index = ItemIndex(table, bias, self.retrieval)
        cold_index = None
        if "cold" in self.segments:
            cold = np.flatnonzero(self.segments["cold"])
            cold_index = ItemIndex(np.asarray(table)[cold],
                                   None if bias is None else np.asarray(bias)[cold],
                                   self.retrieval, ids=cold, num_items=self.data.num_items)
        seg_masks = {k: jnp.asarray(v) for k, v in self.segments.items()}
        sums_fn = _sharded_sums(self.ks, tuple(self.segments))

        def rank_batch(users, mask):
            user_vecs = self.user_vectors_fn(params, make_query(users, self.part), side)
            user_vecs = np.asarray(jax.device_get(user_vecs), np.float32)
            known = known_item_ids(self.known, users)
            top_scores, top_items = index.search(user_vecs, self.max_k, known)
            cold_top = None
            if cold_index is not None:
                cold_top = cold_index.search(user_vecs, self.max_k, known)[1]
            sums = sums_fn(top_items, cold_top, self.truth.dense(users), mask, seg_masks)
            return sums, top_items, top_scores

        result = self._collect(rank_batch, keep_recs)
        s = index.stats
        self.stats = {"build_seconds": index.build_seconds, "nlist": index.nlist,
                      "nprobe": index.nprobe, "users": s["users"],
                      "exact_fallback_users": s["exact_fallback_users"],
                      "mean_candidates": s["candidates"] / max(s["users"], 1)}
        return result
