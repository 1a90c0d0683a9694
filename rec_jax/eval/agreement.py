"""Teacher–student agreement on the test users: top-K overlap and KL.

Both models rank the full catalogue with the user's known (training and
validation) items removed; overlap is |top-K(teacher) ∩ top-K(student)| / K
and KL is KL(softmax(teacher) ‖ softmax(student)) over the remaining items
at temperature 1, each averaged over users.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from rec_jax.data.interactions import SplitData


@functools.lru_cache(maxsize=16)
def _compare(score_fn, k):
    @jax.jit
    def compare(params, query, side, teacher_logits, known):
        s = score_fn(params, query, side).astype(jnp.float32)
        t = teacher_logits.astype(jnp.float32)
        s_top = jax.lax.top_k(jnp.where(known, -jnp.inf, s), k)[1]
        t_top = jax.lax.top_k(jnp.where(known, -jnp.inf, t), k)[1]
        overlap = (s_top[:, :, None] == t_top[:, None, :]).any(-1).sum(-1) / k
        log_p_t = jax.nn.log_softmax(jnp.where(known, -1e9, t), axis=-1)
        log_p_s = jax.nn.log_softmax(jnp.where(known, -1e9, s), axis=-1)
        kl = (jnp.exp(log_p_t) * (log_p_t - log_p_s)).sum(-1)
        return overlap, kl
    return compare


def agreement(score_fn, params, side, make_query, data: SplitData, users: np.ndarray,
              teacher_logits: np.ndarray, k: int = 10, batch_users: int = 256) -> dict:
    """{"agree/top10_overlap": mean, "agree/kl": mean} over `users`.

    Args:
      users: [N] test users; teacher_logits: [N, num_items] the teacher's
        test-time logits for them.
    """
    known = data.known_items("test")
    compare = _compare(score_fn, k)
    overlaps, kls = [], []
    for lo in range(0, len(users), batch_users):
        u = users[lo:lo + batch_users]
        t = teacher_logits[lo:lo + batch_users]
        n = len(u)
        if n < batch_users:  # One compiled shape.
            u = np.concatenate([u, np.repeat(u[:1], batch_users - n)])
            t = np.concatenate([t, np.repeat(t[:1], batch_users - n, axis=0)])
        o, kl = compare(params, make_query(u, "test"), side, t, known.dense(u))
        overlaps.append(np.asarray(o)[:n])
        kls.append(np.asarray(kl)[:n])
    return {f"agree/top{k}_overlap": float(np.concatenate(overlaps).mean()),
            "agree/kl": float(np.concatenate(kls).mean())}


def teacher_test_logits(score_fn, params, side, make_query, users: np.ndarray,
                        batch_users: int = 256) -> np.ndarray:
    """[N, num_items] teacher logits for the test users (saved once per run)."""
    fn = jax.jit(score_fn)
    out = []
    for lo in range(0, len(users), batch_users):
        u = users[lo:lo + batch_users]
        n = len(u)
        if n < batch_users:
            u = np.concatenate([u, np.repeat(u[:1], batch_users - n)])
        out.append(np.asarray(fn(params, make_query(u, "test"), side))[:n])
    return np.concatenate(out).astype(np.float32)
