"""Loss terms as pure functions of arrays.

Each returns a scalar mean over the examples that count, so terms can be
weighted and added: ``L = Σ α_i L_i``. Hard losses are the models' own tasks;
distillation terms compare student outputs with teacher outputs that arrive
already under ``stop_gradient``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from rec_jax import errors


def _masked_mean(values, mask):
    if mask is None:
        return values.mean()
    mask = mask.astype(values.dtype)
    return (values * mask).sum() / jnp.maximum(mask.sum(), 1.0)


# ---------------------------------------------------------------------------
# Hard (label) losses.
# ---------------------------------------------------------------------------


def bpr_loss(pos_score: jnp.ndarray, neg_score: jnp.ndarray) -> jnp.ndarray:
    """Bayesian personalised ranking: -log σ(s⁺ - s⁻), averaged.

    Args:
      pos_score: [B] scores of observed items.
      neg_score: [B, n] scores of sampled unobserved items.
    """
    return -jax.nn.log_sigmoid(pos_score[:, None] - neg_score).mean()


def softmax_ce_loss(logits: jnp.ndarray, targets: jnp.ndarray,
                    mask: jnp.ndarray | None = None) -> jnp.ndarray:
    """Cross-entropy of a softmax over all items.

    Args:
      logits: [..., num_items]; its leading axes may be 1 where the targets'
        are larger (one softmax row shared by several targets, e.g. all the
        held-out items of a user).
      targets: [...] item ids; entries where mask is False are ignored.
      mask: [...] bool, or None for all.
    """
    safe = jnp.where(targets < 0, 0, targets)
    logits = logits.astype(jnp.float32)
    if logits.shape[:-1] == safe.shape:
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, safe)
    else:
        # Gather from the shared row instead of materialising [..., T, num_items].
        log_p = jax.nn.log_softmax(logits, axis=-1)
        losses = -jnp.take_along_axis(log_p, safe[..., None], axis=-1)[..., 0]
    return _masked_mean(losses, mask)


def sampled_softmax_ce_loss(pos_logits: jnp.ndarray, neg_logits: jnp.ndarray,
                            neg_is_target: jnp.ndarray | None = None,
                            mask: jnp.ndarray | None = None) -> jnp.ndarray:
    """Cross-entropy of each target against sampled items instead of the catalogue.

    -log(exp(p) / (exp(p) + sum_n exp(q_n))): the full softmax's loss with
    the catalogue replaced by N items drawn for the step, so its cost does
    not grow with the number of items. The caller adds each draw's log
    importance weight to its logit (uniform draws: log(num_items / N), so
    the sum estimates the full normaliser; Bengio & Senecal 2008); with
    q_n unshifted, negatives weigh N / num_items of their full-softmax weight.

    Args:
      pos_logits: [...] the target's logit.
      neg_logits: [..., N] logits of the sampled items, importance weights
        included (shared draws broadcast).
      neg_is_target: [..., N] bool, True where a sampled item is the target
        itself (an accidental hit, left out of the softmax), or None.
      mask: [...] bool, or None for all.
    """
    pos = pos_logits.astype(jnp.float32)
    neg = neg_logits.astype(jnp.float32)
    if neg_is_target is not None:
        # A large finite value, not -inf: a row whose draws are all hits then
        # keeps finite gradients (the hits carry ~0 weight either way).
        neg = jnp.where(neg_is_target, -1e9, neg)
    log_z = jnp.logaddexp(pos, jax.nn.logsumexp(neg, axis=-1))
    return _masked_mean(log_z - pos, mask)


def bce_loss(logits: jnp.ndarray, labels: jnp.ndarray,
             mask: jnp.ndarray | None = None) -> jnp.ndarray:
    """Binary cross-entropy with logits; labels may be soft (in [0, 1])."""
    losses = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32),
                                                labels.astype(jnp.float32))
    return _masked_mean(losses, mask)


# ---------------------------------------------------------------------------
# Distillation terms.
# ---------------------------------------------------------------------------

_MASKED = -1e9  # a finite "minus infinity": masked logits get zero probability, no NaN


def soft_kl_loss(student_logits: jnp.ndarray, teacher_logits: jnp.ndarray,
                 temperature: float, mask: jnp.ndarray | None = None) -> jnp.ndarray:
    """T² · KL(softmax(t/T) ‖ softmax(s/T)) over a candidate list, averaged over rows.

    The gradient of the softened KL shrinks like 1/T²; multiplying by T² keeps
    this term's weight comparable across temperatures (Hinton et al., 2015).

    Args:
      student_logits, teacher_logits: [B, C] logits over the same candidates.
      temperature: T > 0.
      mask: [B, C] bool, candidates to keep (None: all).
    """
    t = teacher_logits.astype(jnp.float32) / temperature
    s = student_logits.astype(jnp.float32) / temperature
    if mask is not None:
        t = jnp.where(mask, t, _MASKED)
        s = jnp.where(mask, s, _MASKED)
    log_p_t = jax.nn.log_softmax(t, axis=-1)
    log_p_s = jax.nn.log_softmax(s, axis=-1)
    kl = (jnp.exp(log_p_t) * (log_p_t - log_p_s)).sum(-1)
    return temperature ** 2 * kl.mean()


def top_k_by_passes(x: jnp.ndarray, k: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(values, indices) [..., k] of the k largest entries along the last axis.

    k passes of argmax-and-remove. Inside a differentiated train step on a
    CPU, XLA's top_k on [512, 1682] took 0.3 s while this takes ~7 ms; the
    results here are only ever used without gradient.
    """
    def body(j, carry):
        values, out_v, out_i = carry
        idx = jnp.argmax(values, axis=-1)
        top = jnp.take_along_axis(values, idx[..., None], axis=-1)[..., 0]
        values = jnp.where(jax.nn.one_hot(idx, values.shape[-1], dtype=jnp.bool_), -jnp.inf,
                           values)
        return values, out_v.at[..., j].set(top), out_i.at[..., j].set(idx.astype(jnp.int32))
    shape = x.shape[:-1] + (k,)
    init = (x, jnp.zeros(shape, x.dtype), jnp.zeros(shape, jnp.int32))
    _, values, indices = jax.lax.fori_loop(0, k, body, init)
    return values, indices


def kth_largest(x: jnp.ndarray, k: int) -> jnp.ndarray:
    """[..., 1] the k-th largest value along the last axis (tied values count once).

    k passes of max-and-remove; cheaper still than top_k_by_passes (no argmax)
    when only the threshold is needed.
    """
    def body(_, carry):
        values, _ = carry
        top = values.max(-1, keepdims=True)
        return jnp.where(values >= top, -jnp.inf, values), top
    init = (x, jnp.zeros(x.shape[:-1] + (1,), x.dtype))
    return jax.lax.fori_loop(0, k, body, init)[1]


RANK_WEIGHTINGS = ("position", "confidence", "consistency", "hybrid")


def rank_weights(scheme: str, teacher_scores: jnp.ndarray, in_student_topk: jnp.ndarray,
                 valid: jnp.ndarray, lam: float) -> jnp.ndarray:
    """Per-item weights of the teacher's top-K list, each row summing to 1.

    Args:
      scheme: "position": exp(-r/λ) for rank r = 0..K-1 (Ranking Distillation);
        "confidence": softmax of the teacher's scores over the list;
        "consistency": doubled weight for items the student also ranks in its
        top K (DLLM2Rec); "hybrid": the product of the three.
      teacher_scores: [B, K] teacher logits of its top-K items (best first).
      in_student_topk: [B, K] bool.
      valid: [B, K] bool (False = removed from the list).
      lam: position decay λ.
    """
    if scheme not in RANK_WEIGHTINGS:
        raise errors.ConfigError(
            f"config.distill.rank_weighting={scheme!r}: use one of {RANK_WEIGHTINGS}")
    k = teacher_scores.shape[-1]
    position = jnp.broadcast_to(jnp.exp(-jnp.arange(k, dtype=jnp.float32) / lam),
                                teacher_scores.shape)
    confidence = jax.nn.softmax(jnp.where(valid, teacher_scores, _MASKED), axis=-1)
    consistency = 1.0 + in_student_topk.astype(jnp.float32)
    w = {"position": position, "confidence": confidence, "consistency": consistency,
         "hybrid": position * confidence * consistency}[scheme]
    w = jnp.where(valid, w, 0.0)
    return w / jnp.maximum(w.sum(-1, keepdims=True), 1e-12)


def topk_rank_loss(student_logits_at_topk: jnp.ndarray, weights: jnp.ndarray,
                   form: str = "sigmoid", log_partition: jnp.ndarray | None = None) -> jnp.ndarray:
    """Ranking distillation: the teacher's top-K as weighted extra positives.

    Args:
      student_logits_at_topk: [B, K] student logits of the teacher's items.
      weights: [B, K] from rank_weights (0 for removed items).
      form: "sigmoid": -Σ w log σ(s) (pointwise, for BPR/BCE students);
        "softmax": -Σ w log softmax(s) over the catalogue (for softmax
        students), which needs log_partition.
      log_partition: [B] logsumexp of the student's logits over all candidates.
    """
    s = student_logits_at_topk.astype(jnp.float32)
    if form == "sigmoid":
        log_p = jax.nn.log_sigmoid(s)
    elif form == "softmax":
        log_p = s - log_partition[:, None]
    else:
        raise ValueError(f"rank loss form {form!r}: use 'sigmoid' or 'softmax'")
    return -(weights * log_p).sum(-1).mean()


def embedding_loss(projected: jnp.ndarray, target: jnp.ndarray, kind: str = "cosine") -> jnp.ndarray:
    """Embedding distillation between P·e_student [N, d_t] and e_teacher [N, d_t]."""
    projected = projected.astype(jnp.float32)
    target = target.astype(jnp.float32)
    if kind == "mse":
        return jnp.square(projected - target).sum(-1).mean()
    if kind == "cosine":
        num = (projected * target).sum(-1)
        den = jnp.linalg.norm(projected, axis=-1) * jnp.linalg.norm(target, axis=-1)
        return (1.0 - num / jnp.maximum(den, 1e-8)).mean()
    raise errors.ConfigError(f"config.distill.emb_loss={kind!r}: use 'cosine' or 'mse'")


def weighted_total(terms: dict[str, jnp.ndarray], weights) -> jnp.ndarray:
    """Σ α_i L_i over the terms present; a zero weight drops its term entirely."""
    total = 0.0
    for name, value in terms.items():
        alpha = float(weights[name])
        if alpha:
            total = total + alpha * value
    return total
