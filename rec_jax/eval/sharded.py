"""Full-ranking top-K over a row-sharded item table (mesh mode).

With the catalogue split over the mesh's "model" axis, no device can hold a
user's scores over all items, and none needs to: each shard scores its own
rows, keeps its local top K, and the M shards' M x K candidates are merged
into the global top K. Local ids become global by adding the shard's first
row. Users are split over "data", so a (data, model) mesh scores a
[users, items] block per device.

Known items (training items, and validation items when testing) are passed
as padded id lists ``[B, M]`` (-1 = none), not as a dense ``[B, I]`` mask,
which would be as large as the scores; each shard drops the ids outside its
row range. The result equals ``jax.lax.top_k`` of the dense, masked
``user_vecs @ table.T + bias`` (up to the order of exactly tied scores).

:class:`ShardedEvaluator` is the trainer's full-ranking evaluator built on
it (mesh mode): same users, segments, metrics and recs CSVs as
:class:`rec_jax.eval.evaluator.Evaluator`, for models that score by a dot
product of a user vector and an item table (MF, SASRec).

Across processes (multi-host mesh mode) every process runs the same
evaluation over the same users: each scores its devices' blocks, and the
merged top K comes back replicated on every device, so every process computes
the same metrics from it (process 0 alone writes results and recs files).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from rec_jax.data.interactions import CSR, SplitData
from rec_jax.eval import metrics as metrics_lib
from rec_jax.eval.evaluator import Evaluator
from rec_jax.sharding import DATA, MODEL, place, tree_shardings


def known_item_ids(known: CSR, users: np.ndarray, width: int | None = None) -> np.ndarray:
    """[len(users), width] each user's known items, padded with -1.

    Args:
      known: e.g. ``SplitData.known_items(part)``.
      width: columns; default the longest list among `users`.
    """
    lengths = known.lengths()[users]
    width = int(lengths.max(initial=0)) if width is None else width
    out = np.full((len(users), max(width, 1)), -1, np.int32)
    for k, u in enumerate(users):
        row = known.row(int(u))[:width]
        out[k, :len(row)] = row
    return out


def shard_item_table(table, bias, mesh: Mesh):
    """Places an item table row-sharded on "model", padding rows to a multiple.

    Padded rows get zero vectors and a -inf bias, so they never enter a top
    K that real items can fill.

    Args:
      table: [I, d] item vectors (host or device).
      bias: [I] item biases, or None (zeros).

    Returns:
      (table [I', d], bias [I'], I) with I' the padded row count.
    """
    num_items = table.shape[0]
    m = mesh.shape[MODEL]
    padded = -(-num_items // m) * m
    table = jnp.asarray(table, jnp.float32)
    bias = jnp.zeros((num_items,), jnp.float32) if bias is None else jnp.asarray(bias, jnp.float32)
    if padded != num_items:
        table = jnp.pad(table, ((0, padded - num_items), (0, 0)))
        bias = jnp.pad(bias, (0, padded - num_items), constant_values=-jnp.inf)
    return (jax.device_put(table, NamedSharding(mesh, P(MODEL, None))),
            jax.device_put(bias, NamedSharding(mesh, P(MODEL))), num_items)


@functools.lru_cache(maxsize=32)
def _sharded_top_k_fn(mesh: Mesh, k: int, num_items: int):
    def local(user_vecs, table, bias, known):
        # user_vecs: [b, d] this data shard's users; table: [r, d] this model
        # shard's rows, global ids [offset, offset + r).
        rows = table.shape[0]
        offset = jax.lax.axis_index(MODEL) * rows
        scores = user_vecs.astype(jnp.float32) @ table.T.astype(jnp.float32) + bias
        global_ids = offset + jnp.arange(rows)
        scores = jnp.where(global_ids[None] < num_items, scores, -jnp.inf)
        # Known items of this shard: local column, or `rows` (dropped) when
        # the id lies on another shard or is padding (-1).
        col = known - offset
        col = jnp.where((known >= 0) & (col >= 0) & (col < rows), col, rows)
        user_row = jnp.broadcast_to(jnp.arange(known.shape[0])[:, None], col.shape)
        scores = scores.at[user_row, col].set(-jnp.inf, mode="drop")
        local_k = min(k, rows)
        top_scores, top_local = jax.lax.top_k(scores, local_k)
        # Merge: every shard's candidates to every shard of the row, then the
        # top K of the M * local_k candidates.
        cand_scores = jax.lax.all_gather(top_scores, MODEL, axis=1, tiled=True)
        cand_ids = jax.lax.all_gather(top_local + offset, MODEL, axis=1, tiled=True)
        best_scores, pos = jax.lax.top_k(cand_scores, k)
        return best_scores, jnp.take_along_axis(cand_ids, pos, axis=1).astype(jnp.int32)

    fn = jax.shard_map(local, mesh=mesh,
                       in_specs=(P(DATA, None), P(MODEL, None), P(MODEL), P(DATA, None)),
                       out_specs=(P(DATA, None), P(DATA, None)), check_vma=False)
    # The [B, k] result replicated on every device (an all-gather over "data"):
    # every process can read all users' top K, not only its own devices' rows.
    rep = NamedSharding(mesh, P())
    return jax.jit(fn, out_shardings=(rep, rep))


def sharded_top_k(user_vecs, table, bias, known, k: int, mesh: Mesh, num_items: int):
    """Global top-K items per user from a row-sharded table.

    Args:
      user_vecs: [B, d] user vectors (any B: padded to a multiple of the
        "data" axis here).
      table, bias: from :func:`shard_item_table` ([I', d], [I'], row-sharded).
      known: [B, M] int item ids to exclude per user, -1 = padding.
      k: how many items (at most I').
      mesh: the ("data", "model") mesh the table lives on.
      num_items: the real catalogue size (rows >= it are padding).

    Returns:
      (scores [B, k] float32, items [B, k] int32), best first; excluded
      items score -inf and never precede a real one.
    """
    batch = user_vecs.shape[0]
    d = mesh.shape[DATA]
    padded = -(-batch // d) * d
    user_vecs = jnp.asarray(user_vecs)
    # Host ids stay numpy: each process then places only its own devices' rows.
    known = np.asarray(known, np.int32)
    if padded != batch:
        user_vecs = jnp.pad(user_vecs, ((0, padded - batch), (0, 0)))
        known = np.pad(known, ((0, padded - batch), (0, 0)), constant_values=-1)
    # Each shard contributes min(k, rows) candidates, so k <= I' suffices.
    if k > table.shape[0]:
        raise ValueError(f"k={k} exceeds the {table.shape[0]} table rows")
    scores, items = _sharded_top_k_fn(mesh, int(k), int(num_items))(user_vecs, table, bias, known)
    return scores[:batch], items[:batch]


def dense_top_k(user_vecs, table, bias, known, k: int):
    """The unsharded reference: top K of the masked dense scores [B, I]."""
    scores = jnp.asarray(user_vecs, jnp.float32) @ jnp.asarray(table, jnp.float32).T
    if bias is not None:
        scores = scores + bias
    known = jnp.asarray(known, jnp.int32)
    col = jnp.where(known >= 0, known, scores.shape[1])
    user_row = jnp.broadcast_to(jnp.arange(known.shape[0])[:, None], col.shape)
    scores = scores.at[user_row, col].set(-jnp.inf, mode="drop")
    top_scores, top_items = jax.lax.top_k(scores, k)
    return top_scores, top_items.astype(jnp.int32)


# ---------------------------------------------------------------------------
# The full-ranking evaluator on a row-sharded table (mesh mode of the trainer).
# ---------------------------------------------------------------------------


class ShardedEvaluator(Evaluator):
    """:class:`rec_jax.eval.evaluator.Evaluator` for dot-product models in mesh mode.

    Same users, batches, segments, metrics and recs as the dense evaluator,
    but no [users, items] score matrix is formed: the item table is placed
    row-sharded on the mesh's "model" axis and each batch's top K comes from
    :func:`sharded_top_k` (top K per shard, then merged). ``cold_only`` ranks
    a second time with non-cold items' bias set to -inf.

    Args:
      data, part, ks, batch_users, num_recs: as for Evaluator.
      mesh: the ("data", "model") mesh.
      user_vectors_fn: (params, query, side) -> [B, d].
      item_table_fn: (params, side) -> ([num_items, d], [num_items] or None).
    """

    # The trainer hands it params as they lie on the mesh (no host gather).
    ranks_on_mesh = True

    def __init__(self, data: SplitData, part: str, mesh: Mesh, user_vectors_fn, item_table_fn,
                 ks=(10, 20), batch_users: int = 256, num_recs: int = 20,
                 users: np.ndarray | None = None):
        super().__init__(data, part, ks, batch_users, num_recs, users)
        self.mesh = mesh
        self.num_items = data.num_items
        self.user_vectors_fn = jax.jit(user_vectors_fn)
        self.item_table_fn = jax.jit(item_table_fn)
        # One width for every batch (one compiled top-K): the longest known list.
        self.known_width = max(int(self.known.lengths()[self.users].max(initial=0)), 1)

    def evaluate(self, score_fn, params, side, make_query, keep_recs: bool = True):
        """As Evaluator.evaluate; `score_fn` is unused (the two towers score)."""
        del score_fn
        # Catalogue-sized params and side tables live row-sharded, as in training
        # (host arrays are placed, each process its own shards; arrays already
        # on the mesh, the trainer's, are kept).
        params = place(params, tree_shardings(params, self.mesh, self.num_items))
        side = place(side, tree_shardings(side, self.mesh, self.num_items))
        table, bias = self.item_table_fn(params, side)
        if bias is None:
            bias = jnp.zeros((self.num_items,), jnp.float32)
        table_s, bias_s, n = shard_item_table(table, bias, self.mesh)
        cold_bias_s = None
        if "cold" in self.segments:
            cold = self.segments["cold"]  # host mask: the same on every process
            _, cold_bias_s, _ = shard_item_table(table, jnp.where(cold, bias, -jnp.inf), self.mesh)
        seg_masks = dict(self.segments)
        sums_fn = _sharded_sums(self.ks, tuple(self.segments))

        def rank_batch(users, mask):
            user_vecs = self.user_vectors_fn(params, make_query(users, self.part), side)
            known = known_item_ids(self.known, users, self.known_width)
            top_scores, top_items = sharded_top_k(user_vecs, table_s, bias_s, known, self.max_k,
                                                  self.mesh, n)
            cold_top = None
            if cold_bias_s is not None:
                _, cold_top = sharded_top_k(user_vecs, table_s, cold_bias_s, known, self.max_k,
                                            self.mesh, n)
            sums = sums_fn(top_items, cold_top, self.truth.dense(users), mask, seg_masks)
            return sums, top_items, top_scores

        result, recs = self._collect(rank_batch, keep_recs)
        if jax.process_count() > 1:
            # Early stopping reads these on every process: a process that saw
            # other numbers would stop at another step and hang the rest.
            # Compared bit for bit (float64 as uint32 pairs: JAX gathers 32-bit).
            bits = np.asarray([result[k] for k in sorted(result)], np.float64).view(np.uint32)
            every = np.asarray(multihost_utils.process_allgather(bits))  # [processes, 2n]
            if not (every == every[0]).all():
                raise AssertionError(f"{self.part} metrics differ between processes")
        return result, recs


@functools.lru_cache(maxsize=16)
def _sharded_sums(ks, segment_names):
    """Metric sums per segment from given top items (the dense ranker's second half)."""

    @jax.jit
    def sums_fn(top_items, cold_top, truth, user_mask, seg_masks):
        sums = metrics_lib.ranking_sums(top_items, truth, ks, user_mask)
        for name in segment_names:
            seg = metrics_lib.ranking_sums(top_items, truth & seg_masks[name][None], ks, user_mask)
            sums.update({f"{name}/{k}": v for k, v in seg.items()})
        if cold_top is not None:
            seg = metrics_lib.ranking_sums(cold_top, truth & seg_masks["cold"][None], ks,
                                           user_mask)
            sums.update({f"cold_only/{k}": v for k, v in seg.items()})
        return sums

    return sums_fn
