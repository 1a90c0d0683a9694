"""The multi-task distillation objective over a student and a teacher view.

    L = α_hard·L_hard + α_soft·L_soft + α_rank·L_rank + α_emb·L_emb + α_aux·L_aux

Each term is a pure function of a :class:`~rec_jax.spec.StudentView` (what
one student forward pass exposes) and a :class:`~rec_jax.spec.TeacherView`
(the teacher's outputs for the same users, already under stop_gradient);
:func:`kd_objective` composes them with the weights of
``config.distill.weights`` (a zero α switches its term off). How the views
are produced (cached artifacts or the teacher online in the step) is wiring:
``rec_jax.recipes.kd``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rec_jax.distill import objectives
from rec_jax.spec import StudentView, TeacherView


def soft_term(view: StudentView, teacher: TeacherView, batch: dict,
              temperature: float) -> jnp.ndarray:
    """T²-scaled KL between the teacher's and the student's softened scores.

    Over the whole catalogue when the student scores it in the step, else over
    a candidate list: the positive, the sampled negatives and the teacher's
    top K (what fits when the catalogue is too big to score per example).
    """
    if view.full_logits is not None:
        return objectives.soft_kl_loss(view.full_logits, teacher.logits_full(), temperature)
    cands = jnp.concatenate([batch["item"][:, None], batch["negatives"], teacher.topk_items],
                            axis=1)
    return objectives.soft_kl_loss(view.logits_at(cands), teacher.logits_at(cands), temperature)


def rank_term(view: StudentView, teacher: TeacherView, seen: jnp.ndarray | None, topk: int,
              weighting: str, rank_lambda: float, rank_form: str) -> jnp.ndarray:
    """Top-K ranking distillation: the teacher's top K as weighted positives.

    Args:
      seen: [B, I] bool, the batch users' training items (read only when the
        student scores the whole catalogue).
      weighting: position | confidence | consistency | hybrid (objectives.rank_weights).
      rank_form: auto (the student's own form) | sigmoid | softmax.
    """
    items = teacher.topk_items
    valid = items >= 0
    student_at = view.logits_at(jnp.where(valid, items, 0))
    if view.full_logits is not None:
        # The student's own top K (training items excluded) only picks
        # weights, so it is computed without gradient.
        full = jax.lax.stop_gradient(view.full_logits)
        masked = jnp.where(seen, -jnp.inf, full)
        in_student = jax.lax.stop_gradient(student_at) >= objectives.kth_largest(masked, topk)
        log_z = jax.nn.logsumexp(view.full_logits, axis=-1)
    else:
        # Without the catalogue, "the student's top K" is taken among the
        # teacher's list itself: its K/2 best-scored items.
        order = jnp.argsort(jnp.argsort(-student_at, axis=-1), axis=-1)
        in_student = order < max(1, topk // 2)
        log_z = None
    weights = objectives.rank_weights(weighting, teacher.topk_scores, in_student, valid,
                                      rank_lambda)
    form = rank_form if rank_form != "auto" else view.rank_form
    if form == "softmax" and log_z is None:
        form = "sigmoid"
    return objectives.topk_rank_loss(student_at, weights, form, log_z)


def emb_term(user_proj: jnp.ndarray, item_proj: jnp.ndarray, teacher: TeacherView,
             item_ids: jnp.ndarray | None, kind: str) -> jnp.ndarray:
    """Embedding distillation: projected student vectors against the teacher's.

    Args:
      user_proj: [B, dt], item_proj: [N, dt] the student's vectors after the
        learned projectors; item_ids: [N] which items (None: all, in order).
      kind: "cosine" or "mse".
    """
    t_items = teacher.item_vec if item_ids is None else teacher.item_vec[item_ids]
    return (objectives.embedding_loss(user_proj, teacher.user_vec, kind)
            + objectives.embedding_loss(item_proj, t_items, kind))


def aux_term(genre_logits: jnp.ndarray, view: StudentView, teacher: TeacherView) -> jnp.ndarray:
    """Auxiliary tasks from the teacher's soft labels: genres, and CTR for CTR
    students (each only where the teacher has that head)."""
    aux = jnp.zeros((), jnp.float32)
    if teacher.genre_prob is not None:
        target = (teacher.genre_prob if view.item_ids is None
                  else teacher.genre_prob[view.item_ids])
        aux = aux + objectives.bce_loss(genre_logits, target)
    if view.ctr_logit is not None and teacher.ctr_prob is not None:
        aux = aux + objectives.bce_loss(view.ctr_logit, teacher.ctr_prob)
    return aux


def kd_objective(hard: jnp.ndarray, view: StudentView, teacher: TeacherView,
                 heads_out: tuple, batch: dict, seen: jnp.ndarray | None,
                 settings) -> tuple[jnp.ndarray, dict]:
    """Composes the terms.

    Args:
      hard: the student's own task loss on the batch.
      view, teacher: the two sides, on the same (sub)batch of users.
      heads_out: (user_proj, item_proj, genre_logits) of the student's KD heads.
      batch: the (sub)batch (the candidate list reads its items and negatives).
      seen: [B, I] training items of the batch users, or None if no term needs it.
      settings: config.distill (weights, temperature, topk, rank_weighting,
        rank_lambda, rank_form, emb_loss).

    Returns:
      (loss, {term name: unweighted value}), terms in a fixed order.
    """
    w = settings.weights
    terms = {"hard": hard}
    if w.soft:
        terms["soft"] = soft_term(view, teacher, batch, float(settings.temperature))
    if w.rank:
        terms["rank"] = rank_term(view, teacher, seen, int(settings.topk),
                                  settings.rank_weighting, settings.rank_lambda,
                                  settings.rank_form)
    user_proj, item_proj, genre_logits = heads_out
    if w.emb:
        terms["emb"] = emb_term(user_proj, item_proj, teacher, view.item_ids, settings.emb_loss)
    if w.aux:
        terms["aux"] = aux_term(genre_logits, view, teacher)
    return objectives.weighted_total(terms, w), terms
