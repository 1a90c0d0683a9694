"""`<student>_kd`: a student wired to the distillation objective.

The teacher enters the student's jitted, pmapped train step in one of two
ways that give the same loss:

* ``cached``: its artifacts (``recipes.artifacts``) arrive in the batch
  (per-user vectors, top-K lists, CTR probabilities) and in `side` (per-item
  vectors, bias, genre probabilities);
* ``online``: its frozen params arrive as the step's `frozen` argument and it
  runs inside the step on the batch's history windows.

Either way teacher outputs pass through ``stop_gradient``, and the teacher's
params are not part of the student's train state, so they never change and
are never re-saved. Learned distillation-only layers (``models.kd_heads``)
live in params["kd"]; serving uses only params["student"]. The loss itself
is ``distill.kd.kd_objective``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rec_jax import errors
from rec_jax.data import raw
from rec_jax.data.interactions import SplitData
from rec_jax.data.sources import KDSource
from rec_jax.distill import objectives
from rec_jax.distill.kd import kd_objective
from rec_jax.models.kd_heads import KDHeads
from rec_jax.models.teacher import Teacher
from rec_jax.spec import ModelSpec, TeacherView

TEACHER_MODES = ("cached", "online")


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
        # (genre_prob is absent for a student used as a teacher: no genre head.)
        side["teacher"] = {k: a[k] for k in ("item_vec", "item_bias", "genre_prob") if k in a}
    if needs_train_mask:
        # [U, I] bool: which items each user trained on (masks the student's
        # and the online teacher's top-K). Fine for MovieLens-sized catalogues.
        side["train_mask"] = data.train.dense(np.arange(data.num_users))
    return side


def teacher_view(bundle: TeacherBundle, batch, side, frozen, topk: int) -> TeacherView:
    """The teacher's outputs for the batch users, under stop_gradient."""
    users = batch["user"]
    if bundle.mode == "cached":
        t = side["teacher"]
        view = TeacherView(batch["t_user_vec"], t["item_vec"], t["item_bias"], bundle.temperature,
                           batch["t_topk_items"], batch["t_topk_scores"], t.get("genre_prob"),
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


def kd_loss(student: ModelSpec, heads: KDHeads, bundle: TeacherBundle, dcfg):
    """The distillation loss_fn(params, batch, side, frozen, rng) -> (loss, sums)."""
    topk = int(dcfg.topk)
    rows = int(dcfg.rows_per_step)

    def loss_fn(params, batch, side, frozen, rng):
        hard_rng, view_rng = jax.random.split(rng)
        hard, _, n = student.hard_fn(params["student"], batch, side, hard_rng)
        # Distillation terms read the first `rows` examples of the (shuffled)
        # device batch: a random subset that bounds the [rows, catalogue]
        # work when batches are large (BPR / CTR students).
        batch = jax.tree.map(lambda x: x[:rows], batch)
        view = student.view_fn(params["student"], batch, side, view_rng)
        teacher = teacher_view(bundle, batch, side, frozen, topk)
        heads_out = heads.apply({"params": params["kd"]}, view.user_emb, view.item_emb)
        seen = side["train_mask"][batch["user"]] if "train_mask" in side else None
        loss, terms = kd_objective(hard, view, teacher, heads_out, batch, seen, dcfg)
        sums = {"loss": loss * n, "examples": n}
        sums.update({f"{k}_loss": v * n for k, v in terms.items()})
        return loss, sums

    return loss_fn


def _on_student(fn):
    """A student function of params, lifted to the {"student", "kd"} tree."""
    if fn is None:
        return None

    def lifted(params, *args):
        return fn(params["student"], *args)
    return lifted


def kd_spec(student: ModelSpec, bundle: TeacherBundle, config, data: SplitData, side: dict
            ) -> tuple[ModelSpec, dict]:
    """The `<student>_kd` ModelSpec, and the side tables it needs."""
    dcfg = config.distill
    if bundle.mode not in TEACHER_MODES:
        raise errors.ConfigError(
            f"config.distill.teacher_mode={bundle.mode!r}: use one of {TEACHER_MODES}")
    if bundle.mode == "cached" and bundle.artifacts["topk_items"].shape[1] < int(dcfg.topk):
        raise errors.ConfigError(
            f"config.distill.topk={dcfg.topk} exceeds the teacher artifacts' top-"
            f"{bundle.artifacts['topk_items'].shape[1]} (config.teacher.artifact_topk)")
    heads = KDHeads(bundle.dim, len(raw.GENRES))
    student_max_len = getattr(student.module, "max_len", None)
    source = KDSource(student.source, data, bundle.mode, int(dcfg.topk), bundle.artifacts,
                      student_max_len, bundle.max_len)
    needs_mask = bundle.mode == "online" or bool(dcfg.weights.rank)
    kd_side = side_for(bundle, data, side, needs_mask)

    def init(rng):
        student_rng, heads_rng = jax.random.split(rng)
        params = student.init(student_rng)
        d = student.embed_dim
        kd = heads.init(heads_rng, jnp.zeros((1, d)), jnp.zeros((1, d)))["params"]
        return {"student": params, "kd": kd}

    spec = dataclasses.replace(
        student, init=init, loss_fn=kd_loss(student, heads, bundle, dcfg), source=source,
        score_fn=_on_student(student.score_fn), hard_fn=_on_student(student.hard_fn),
        view_fn=_on_student(student.view_fn),
        frozen=bundle.params if bundle.mode == "online" else None,
        ctr_logit_fn=_on_student(student.ctr_logit_fn),
        user_vectors_fn=_on_student(student.user_vectors_fn),
        item_table_fn=_on_student(student.item_table_fn))
    return spec, kd_side
