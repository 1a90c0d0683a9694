"""ANN against exact top-10 on a synthetic 1M-item catalogue (the ``ann`` part).

    python -m rec_jax.bench --parts ann --out workdir/bench/ann.json
    python -m rec_jax.bench --parts ann --ann_data clustered,gaussian ...     # + pessimistic row

With both kinds the part took 37 s on the idle 2-core AMD EPYC (4 s per
index build; 507 s under a load average of ~11); ``--quick`` uses 200k items.

No model is trained at 1M items: item and user vectors of the MF size
(d = 64, plus MF's item bias) are drawn, and both sides rank them by
``u . v + b``:

* **exact**: the evaluator's exact path, jitted ``top_k(u @ T.T + b, 10)``
  over batches of 256 users (``config.eval.batch_users``). It is timed
  without the known-item mask, which would only add to its cost.
* **ANN**: :class:`rec_jax.eval.ann.ItemIndex` (FAISS IVF-Flat, inner
  product) as ``config.eval.retrieval="ivf"`` builds it; build seconds are
  reported apart from search.

Vectors (``--ann_data``): ``clustered`` (default; what the target is judged
on): 1,024 centres ~ N(0, I); an item is its centre + 0.75 N(0, I), scaled by
exp(0.25 N(0, 1)) (norms vary, as popularity makes them in trained MF); a
user is a centre + N(0, I); all / sqrt(d). Trained embeddings cluster (genres,
tastes), so this resembles them; how much is a guess, which is why the
nprobe sweep is reported too. ``gaussian``: items and users ~ N(0, I / d), the
pessimistic case (no structure for cells to exploit: IVF recall collapses).
Both add an item bias ~ N(0, 0.1^2).

Reported: recall@10 of the index against exact top-10, ms per user (batched
and one user at a time) for both, the speed-up, and the same with 100 known
items per user excluded (50 of them from the user's exact top 100, so the
exclusion really bites; the index fetches 10 + 128 candidates, see
``rec_jax.eval.ann``). Passes alternate exact / ANN so that load drifts hit both.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from rec_jax.eval import ann

DIM = 64
BATCH = 256
K = 10
KNOWN = 100  # known items per user in the exclusion rows
SWEEP = (4, 8, 16, 32, 64)


def catalogue(kind: str, num_items: int, num_users: int, seed: int = 0):
    """(items [N, d], bias [N], users [U, d]) float32 of the given kind (see module doc)."""
    rng = np.random.default_rng(seed)
    if kind == "clustered":
        centres = rng.standard_normal((1024, DIM), np.float32)
        items = centres[rng.integers(0, 1024, num_items)]
        items += 0.75 * rng.standard_normal((num_items, DIM), np.float32)
        items *= np.exp(0.25 * rng.standard_normal((num_items, 1), np.float32))
        users = centres[rng.integers(0, 1024, num_users)]
        users = users + rng.standard_normal((num_users, DIM), np.float32)
    elif kind == "gaussian":
        items = rng.standard_normal((num_items, DIM), np.float32)
        users = rng.standard_normal((num_users, DIM), np.float32)
    else:
        raise ValueError(f"--ann_data: unknown kind {kind!r}; use clustered, gaussian")
    bias = 0.1 * rng.standard_normal(num_items, np.float32)
    return items / np.sqrt(DIM), bias, users / np.sqrt(DIM)


def _recall(got: np.ndarray, want: np.ndarray) -> float:
    """Mean |got ∩ want| / k over rows ([U, k] each)."""
    return float(np.mean([len(set(a) & set(b)) / want.shape[1] for a, b in zip(got, want)]))


def _known(rng, exact_top: np.ndarray, num_items: int):
    """[U, KNOWN] known items (half from each user's exact top 100, half at random) and
    [U, K] the exact top K once they are excluded."""
    known = np.empty((len(exact_top), KNOWN), np.int64)
    truth = np.empty((len(exact_top), K), np.int64)
    for u, top in enumerate(exact_top):
        picks = rng.choice(top, KNOWN // 2, replace=False)
        rest = np.setdiff1d(rng.choice(num_items, 2 * KNOWN, replace=False), picks)
        rest = rest[:KNOWN - len(picks)]
        known[u] = np.concatenate([picks, rest])
        # The top 100 holds at most 50 known items, so its first 10 unknown ones are
        # the exact answer.
        truth[u] = top[~np.isin(top, known[u])][:K]
    return known, truth


def compare(kind: str, num_items: int, num_users: int, repeats: int,
            retrieval: ann.Retrieval) -> dict:
    """Exact vs the index on one synthetic catalogue; every ms figure a median."""
    t = time.perf_counter()
    items, bias, users = catalogue(kind, num_items, num_users)
    out = {"kind": kind, "items": num_items, "dim": DIM, "users": num_users, "k": K,
           "batch_users": BATCH, "generate_seconds": time.perf_counter() - t}
    table_d, bias_d = jnp.asarray(items), jnp.asarray(bias)
    exact_fn = jax.jit(lambda u, t, b, k: jax.lax.top_k(u @ t.T + b, k), static_argnums=3)
    # One user: `u @ t.T` makes XLA's CPU backend transpose the whole table per call
    # (~0.6 s at 1M x 64 here); the table-major product is its fast form for B = 1.
    exact_one_fn = jax.jit(lambda u, t, b: jax.lax.top_k((t @ u.T).T + b, K))
    batches = [users[lo:lo + BATCH] for lo in range(0, num_users, BATCH)]

    def exact_pass(k=K):
        return np.concatenate([np.asarray(exact_fn(u, table_d, bias_d, k)[1]) for u in batches])

    # The reference (top 100: the exclusion rows need depth), also compiling.
    exact_top100 = exact_pass(100)
    exact_top = exact_top100[:, :K]
    jax.block_until_ready(exact_fn(batches[0], table_d, bias_d, K))  # compiles k = K

    t = time.perf_counter()
    index = ann.ItemIndex(items, bias, retrieval)
    out.update(build_seconds=time.perf_counter() - t, nlist=index.nlist, nprobe=index.nprobe,
               index_bytes=int(index.vectors.nbytes))

    def ann_pass(known=None):
        return np.concatenate([index.search(u, K, None if known is None else
                                            known[lo * BATCH:(lo + 1) * BATCH])[1]
                               for lo, u in enumerate(batches)])

    exact_s, ann_s = [], []
    for _ in range(repeats):  # interleaved: load drifts hit both sides
        t = time.perf_counter()
        exact_pass()
        exact_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        got = ann_pass()
        ann_s.append(time.perf_counter() - t)
    exact_ms = 1000 * statistics.median(exact_s) / num_users
    ann_ms = 1000 * statistics.median(ann_s) / num_users
    out.update(exact_ms_per_user=exact_ms, ann_ms_per_user=ann_ms, speedup=exact_ms / ann_ms,
               recall_at_10=_recall(got, exact_top),
               exact_ms_per_batch=exact_ms * BATCH, ann_ms_per_batch=ann_ms * BATCH)

    # One user per call (a request), interleaved.
    one_exact, one_ann = [], []
    for u in users[:min(50, num_users)]:
        u = u[None]
        t = time.perf_counter()
        jax.block_until_ready(exact_one_fn(u, table_d, bias_d))
        one_exact.append(time.perf_counter() - t)
        t = time.perf_counter()
        index.search(u, K)
        one_ann.append(time.perf_counter() - t)
    out.update(exact_ms_one_user=1000 * statistics.median(one_exact[1:]),  # [0] compiles
               ann_ms_one_user=1000 * statistics.median(one_ann[1:]))

    # Known items excluded (fetch K + 128 candidates, drop the known ones).
    known, truth = _known(np.random.default_rng(1), exact_top100, num_items)
    index.stats["exact_fallback_users"] = 0
    t = time.perf_counter()
    got = ann_pass(known)
    out.update(excluded_known_per_user=KNOWN,
               ann_excluded_ms_per_user=1000 * (time.perf_counter() - t) / num_users,
               recall_at_10_excluded=_recall(got, truth),
               exact_fallback_users=index.stats["exact_fallback_users"])

    sweep = {}
    for nprobe in SWEEP:  # the recall / speed trade-off (one pass each)
        if nprobe > index.nlist:
            continue
        index.set_nprobe(nprobe)
        t = time.perf_counter()
        got = ann_pass()
        ms = 1000 * (time.perf_counter() - t) / num_users
        sweep[str(nprobe)] = {"recall_at_10": _recall(got, exact_top), "ann_ms_per_user": ms,
                              "speedup": exact_ms / ms}
    index.set_nprobe(out["nprobe"])
    out["nprobe_sweep"] = sweep
    return out


def part(quick: bool, num_items: int, kinds, repeats: int, retrieval: str = "ivf") -> dict:
    """The ``ann`` part: results' ``ann`` entry, one record per vector kind."""
    spec = ann.Retrieval.parse(retrieval, key="--ann_retrieval")
    if spec.exact:
        raise ValueError("--ann_retrieval: give an index (e.g. ivf:nprobe=16), not exact")
    num_items = min(num_items, 200_000) if quick else num_items
    num_users = 512 if quick else 1024
    out = {}
    for kind in kinds:
        r = compare(kind, num_items, num_users, min(repeats, 3), spec)
        print(f"[ann] {kind} {num_items:,} items: recall@10 {r['recall_at_10']:.4f}, exact "
              f"{r['exact_ms_per_user']:.3f} ms/user, ANN {r['ann_ms_per_user']:.3f} ms/user "
              f"({r['speedup']:.1f}x), build {r['build_seconds']:.1f} s", flush=True)
        out[kind] = r
    return {"ann": out}
