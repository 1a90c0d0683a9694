"""`<student>_kd`: a student trained with the multi-task distillation objective.

    L = α_hard·L_hard + α_soft·L_soft + α_rank·L_rank + α_emb·L_emb + α_aux·L_aux

(config.distill.weights; a zero α switches its term off). The teacher enters
the same pmapped train step in one of two ways that give the same loss:

* ``cached``: its artifacts (rec_jax.distill.artifacts) arrive in the batch
  (per-user vectors, top-K lists, CTR probabilities) and in `side` (per-item
  vectors, bias, genre probabilities);
* ``online``: its frozen params arrive as the step's `frozen` argument and it
  runs inside the step on the batch's history windows.

Either way teacher outputs pass through ``stop_gradient``, and the teacher's
params are not part of the student's train state, so they never change and
are never re-saved. Learned distillation-only layers (the embedding
projectors and the genre head) live in params["kd"]; serving uses only
params["student"].
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rec_jax.data import raw
from rec_jax.data.interactions import SplitData
from rec_jax.distill import objectives
from rec_jax.models.registry import Parts
from rec_jax.models.teacher import Teacher
from rec_jax.train.trainer import ModelSpec

TEACHER_MODES = ("cached", "online")


class KDHeads(nn.Module):
    """Distillation-only layers: projectors into the teacher space, a genre head."""

    teacher_dim: int
    num_genres: int

    def setup(self):
        self.user_proj = nn.Dense(self.teacher_dim)
        self.item_proj = nn.Dense(self.teacher_dim)
        self.genre = nn.Dense(self.num_genres)

    def __call__(self, user_emb, item_emb):
        return self.user_proj(user_emb), self.item_proj(item_emb), self.genre(item_emb)


@dataclasses.dataclass
class TeacherView:
    """Teacher outputs for a batch (all under stop_gradient)."""

    user_vec: jnp.ndarray  # [B, dt]
    item_vec: jnp.ndarray  # [I, dt]
    item_bias: jnp.ndarray  # [I]
    temperature: float
    topk_items: jnp.ndarray  # [B, K]
    topk_scores: jnp.ndarray  # [B, K]
    genre_prob: jnp.ndarray  # [I, G]
    ctr_prob: jnp.ndarray | None  # [B]

    def logits_full(self):
        return (self.user_vec @ self.item_vec.T + self.item_bias) / self.temperature

    def logits_at(self, items):
        vec = self.item_vec[items]  # [B, C, dt]
        return ((self.user_vec[:, None] * vec).sum(-1) + self.item_bias[items]) / self.temperature


class KDSource:
    """Wraps a student's example source with what distillation reads per example."""

    def __init__(self, base, data: SplitData, mode: str, topk: int, artifacts: dict | None,
                 student_max_len: int | None, teacher_max_len: int):
        self.base, self.data, self.mode, self.topk = base, data, mode, topk
        self.artifacts = artifacts
        self.student_max_len, self.teacher_max_len = student_max_len, teacher_max_len
        self.num_examples = base.num_examples

    def make_batch(self, example_ids, rng):
        batch = self.base.make_batch(example_ids, rng)
        users = batch["user"]
        if self.student_max_len:
            batch["kd_inputs"] = self.data.history_window(users, "train", self.student_max_len)
        if self.mode == "online":
            batch["teacher_inputs"] = self.data.history_window(users, "train",
                                                               self.teacher_max_len)
        else:
            a = self.artifacts
            batch["t_user_vec"] = a["user_vec"][users]
            batch["t_topk_items"] = a["topk_items"][users, :self.topk]
            batch["t_topk_scores"] = a["topk_scores"][users, :self.topk]
            if "row" in batch:
                batch["t_ctr_prob"] = a["ctr_prob"][batch["row"]]
        return batch


@dataclasses.dataclass
class TeacherBundle:
    """How the teacher is reached: artifacts (cached) or module + params (online)."""

    mode: str
    dim: int
    max_len: int
    temperature: float
    artifacts: dict | None = None
    module: Teacher | None = None
    params: Any = None


def side_for(bundle: TeacherBundle, data: SplitData, side: dict, needs_train_mask: bool) -> dict:
    """Adds the teacher's per-item tables (cached) and the training mask (if read)."""
    side = dict(side)
    if bundle.mode == "cached":
        a = bundle.artifacts
        side["teacher"] = {"item_vec": a["item_vec"], "item_bias": a["item_bias"],
                           "genre_prob": a["genre_prob"]}
    if needs_train_mask:
        # [U, I] bool: which items each user trained on (masks the student's
        # and the online teacher's top-K). Fine for MovieLens-sized catalogues.
        side["train_mask"] = data.train.dense(np.arange(data.num_users))
    return side


def teacher_view(bundle: TeacherBundle, batch, side, frozen, topk: int) -> TeacherView:
    users = batch["user"]
    if bundle.mode == "cached":
        t = side["teacher"]
        view = TeacherView(batch["t_user_vec"], t["item_vec"], t["item_bias"], bundle.temperature,
                           batch["t_topk_items"], batch["t_topk_scores"], t["genre_prob"],
                           batch.get("t_ctr_prob"))
    else:
        query = {"user": users, "inputs": batch["teacher_inputs"]}
        out = bundle.module.apply({"params": frozen}, query, side,
                                  method=Teacher.outputs_for_users)
        logits = jnp.where(side["train_mask"][users], -jnp.inf,
                           jax.lax.stop_gradient(out["logits"]))
        scores, items = objectives.top_k_by_passes(logits, topk)
        ctr = None
        if "row" in batch:
            ctr = jax.nn.sigmoid(bundle.module.apply({"params": frozen}, query, batch["item"],
                                                     side, method=Teacher.ctr_for_pairs))
        view = TeacherView(out["user_vec"], out["item_vec"], out["item_bias"],
                           bundle.temperature, items, scores, out["genre_prob"], ctr)
    # The teacher is a constant for the student: no gradient flows into it.
    for field in dataclasses.fields(view):
        value = getattr(view, field.name)
        if isinstance(value, jnp.ndarray):
            setattr(view, field.name, jax.lax.stop_gradient(value))
    return view


def kd_objective(parts: Parts, heads: KDHeads, bundle: TeacherBundle, dcfg):
    """The distillation loss_fn(params, batch, side, frozen, rng) -> (loss, sums)."""
    w = dcfg.weights
    temperature = float(dcfg.temperature)
    topk = int(dcfg.topk)

    rows = int(dcfg.rows_per_step)

    def loss_fn(params, batch, side, frozen, rng):
        hard_rng, view_rng = jax.random.split(rng)
        hard, _, n = parts.hard_fn(params["student"], batch, side, hard_rng)
        # Distillation terms read the first `rows` examples of the (shuffled)
        # device batch: a random subset that bounds the [rows, catalogue]
        # work when batches are large (BPR / CTR students).
        batch = jax.tree.map(lambda x: x[:rows], batch)
        view = parts.view_fn(params["student"], batch, side, view_rng)
        teacher = teacher_view(bundle, batch, side, frozen, topk)
        terms = {"hard": hard}

        if w.soft:
            if view.full_logits is not None:
                terms["soft"] = objectives.soft_kl_loss(view.full_logits, teacher.logits_full(),
                                                        temperature)
            else:
                # Candidate list: the positive, the sampled negatives and the
                # teacher's top-K (DESIGN §5, when the catalogue is too big).
                cands = jnp.concatenate([batch["item"][:, None], batch["negatives"],
                                         teacher.topk_items], axis=1)
                terms["soft"] = objectives.soft_kl_loss(view.logits_at(cands),
                                                        teacher.logits_at(cands), temperature)

        if w.rank:
            items = teacher.topk_items
            valid = items >= 0
            student_at = view.logits_at(jnp.where(valid, items, 0))
            if view.full_logits is not None:
                # The student's own top K (training items excluded) only picks
                # weights, so it is computed without gradient.
                full = jax.lax.stop_gradient(view.full_logits)
                masked = jnp.where(side["train_mask"][batch["user"]], -jnp.inf, full)
                in_student = (jax.lax.stop_gradient(student_at)
                              >= objectives.kth_largest(masked, topk))
                log_z = jax.nn.logsumexp(view.full_logits, axis=-1)
            else:
                # Without the catalogue, "the student's top K" is taken among
                # the teacher's list itself: its K/2 best-scored items.
                order = jnp.argsort(jnp.argsort(-student_at, axis=-1), axis=-1)
                in_student = order < max(1, topk // 2)
                log_z = None
            weights = objectives.rank_weights(dcfg.rank_weighting, teacher.topk_scores,
                                              in_student, valid, dcfg.rank_lambda)
            form = dcfg.rank_form if dcfg.rank_form != "auto" else view.rank_form
            if form == "softmax" and log_z is None:
                form = "sigmoid"
            terms["rank"] = objectives.topk_rank_loss(student_at, weights, form, log_z)

        item_ids = view.item_ids
        t_items = teacher.item_vec if item_ids is None else teacher.item_vec[item_ids]
        genre_target = teacher.genre_prob if item_ids is None else teacher.genre_prob[item_ids]
        user_p, item_p, genre_logits = heads.apply({"params": params["kd"]}, view.user_emb,
                                                   view.item_emb)
        if w.emb:
            terms["emb"] = (objectives.embedding_loss(user_p, teacher.user_vec, dcfg.emb_loss)
                            + objectives.embedding_loss(item_p, t_items, dcfg.emb_loss))
        if w.aux:
            aux = objectives.bce_loss(genre_logits, genre_target)
            if view.ctr_logit is not None and teacher.ctr_prob is not None:
                aux = aux + objectives.bce_loss(view.ctr_logit, teacher.ctr_prob)
            terms["aux"] = aux

        loss = objectives.weighted_total(terms, w)
        sums = {"loss": loss * n, "examples": n}
        sums.update({f"{k}_loss": v * n for k, v in terms.items()})
        return loss, sums

    return loss_fn


def build(parts: Parts, bundle: TeacherBundle, config, data: SplitData, side: dict
          ) -> tuple[ModelSpec, dict]:
    """The `<student>_kd` ModelSpec, and the side tables it needs."""
    dcfg = config.distill
    if bundle.mode not in TEACHER_MODES:
        raise ValueError(f"config.distill.teacher_mode={bundle.mode!r}: use one of {TEACHER_MODES}")
    if bundle.mode == "cached" and bundle.artifacts["topk_items"].shape[1] < int(dcfg.topk):
        raise ValueError(f"config.distill.topk={dcfg.topk} exceeds the teacher artifacts' top-"
                         f"{bundle.artifacts['topk_items'].shape[1]} (config.teacher.artifact_topk)")
    heads = KDHeads(bundle.dim, len(raw.GENRES))
    student_max_len = getattr(parts.module, "max_len", None)
    source = KDSource(parts.source, data, bundle.mode, int(dcfg.topk), bundle.artifacts,
                      student_max_len, bundle.max_len)
    needs_mask = bundle.mode == "online" or bool(dcfg.weights.rank)
    kd_side = side_for(bundle, data, side, needs_mask)

    def init(rng):
        student_rng, heads_rng = jax.random.split(rng)
        student = parts.init(student_rng)
        d = parts.embed_dim
        kd = heads.init(heads_rng, jnp.zeros((1, d)), jnp.zeros((1, d)))["params"]
        return {"student": student, "kd": kd}

    def score_fn(params, query, side):
        return parts.score_fn(params["student"], query, side)

    ctr_fn = None
    if parts.ctr_logit_fn is not None:
        def ctr_fn(params, query, items, side):
            return parts.ctr_logit_fn(params["student"], query, items, side)

    user_fn = item_fn = None
    if parts.item_table_fn is not None:  # The student's towers (mesh-mode evaluation).
        def user_fn(params, query, side):
            return parts.user_vectors_fn(params["student"], query, side)

        def item_fn(params, side):
            return parts.item_table_fn(params["student"], side)

    spec = ModelSpec(name=parts.name, init=init,
                     loss_fn=kd_objective(parts, heads, bundle, dcfg), source=source,
                     score_fn=score_fn, make_query=parts.make_query,
                     frozen=bundle.params if bundle.mode == "online" else None,
                     ctr_logit_fn=ctr_fn, module=parts.module,
                     user_vectors_fn=user_fn, item_table_fn=item_fn)
    return spec, kd_side
