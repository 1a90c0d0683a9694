"""The types that pass between the packages: a parsed model name, a model's
spec, and the views the distillation objective reads.

This module imports nothing of rec_jax, so every package can use it:
``recipes`` builds a :class:`ModelSpec` from a :class:`ModelName`, ``train``
fits it, ``eval`` scores it, ``distill`` reads :class:`StudentView` and
:class:`TeacherView`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax.numpy as jnp

FAMILIES = ("mf", "sasrec", "deepfm", "teacher")
VARIANTS = ("kd", "transfer", "fusion", "textonly", "notext")
# Fitted without gradient steps: popularity, EASE, and the content-KNN cold-start
# baselines (cosine to the user's items over frozen BERT text / KG entity TF-IDF).
BASELINES = ("pop", "ease", "knn_text", "knn_kg")
# Models a `_kd` student may distil from (`mf_kd@sasrec`): the teacher's
# variants, and plain SASRec as a teacher that knows no language.
KD_SOURCES = ("teacher", "teacher_textonly", "teacher_notext", "sasrec")

# (params, batch, side, frozen, rng) -> (loss, sums): the pure objective of one step.
LossFn = Callable[..., tuple[Any, dict]]
# (user rows [B], part "valid" | "test") -> host arrays that score_fn reads.
QueryFn = Callable[..., dict]


@dataclasses.dataclass(frozen=True)
class ModelName:
    """A model name parsed once.

    ``<family>[_kd][_transfer][_fusion][@<source>]`` for students,
    ``teacher[_textonly|_notext]`` for the teacher and its controls, ``pop``
    and ``ease`` for the baselines. ``@<source>`` names the model a student
    distils from (and takes transfer / fusion vectors from); default the
    teacher: ``mf_kd@teacher_notext`` distils from the teacher without text.

    Attributes:
      name: the name as written (the output folder and results key).
      family: "mf", "sasrec", "deepfm", "teacher", or a baseline's name (BASELINES).
      kd, transfer, fusion: the student variants it asks for.
      textonly: the teacher without ID embeddings; notext: without item and
        profile text (IDs and history only).
      source: the model a `_kd` / `_transfer` / `_fusion` student learns from.
    """

    name: str
    family: str
    kd: bool = False
    transfer: bool = False
    fusion: bool = False
    textonly: bool = False
    notext: bool = False
    source: str = "teacher"

    @classmethod
    def parse(cls, name: str) -> "ModelName":
        if name in BASELINES:
            return cls(name, name)
        base, at, source = name.partition("@")
        family, *variants = base.split("_")
        if family not in FAMILIES:
            raise ValueError(f"unknown model {name!r}; known: {sorted(FAMILIES)} and "
                             f"{list(BASELINES)}")
        unknown = sorted(set(variants) - set(VARIANTS))
        if unknown:
            raise ValueError(f"model {name!r}: unknown variant(s) {unknown}; names are "
                             "<model>[_kd][_transfer][_fusion][@source] "
                             "(teacher[_textonly|_notext])")
        flags = {v: v in variants for v in VARIANTS}
        if family == "teacher" and (flags["kd"] or flags["transfer"] or flags["fusion"] or at):
            raise ValueError(f"model {name!r}: the teacher takes only _textonly or _notext")
        if family != "teacher" and (flags["textonly"] or flags["notext"]):
            raise ValueError(f"model {name!r}: _textonly and _notext are teacher variants")
        if at and source not in KD_SOURCES:
            raise ValueError(f"model {name!r}: can learn from {list(KD_SOURCES)}, "
                             f"not {source!r}")
        if at and not (flags["kd"] or flags["transfer"] or flags["fusion"]):
            raise ValueError(f"model {name!r}: @{source} needs _kd, _transfer or _fusion")
        return cls(name, family, **flags, source=source or "teacher")

    @property
    def is_teacher(self) -> bool:
        return self.family == "teacher"


@dataclasses.dataclass
class StudentView:
    """What the distillation objective reads from one student forward pass.

    Attributes:
      user_emb: [B, d] the batch users' vectors.
      item_emb: [N, d] item vectors, of `item_ids` ([N]) or of all items (None).
      full_logits: [B, num_items] logits over the catalogue, or None when the
        model cannot score the catalogue cheaply inside a train step.
      logits_at: items [B, C] -> [B, C] student logits of given candidates.
      ctr_logit: [B] CTR logits of the batch pairs (CTR models), else None.
      rank_form: "softmax" for softmax-trained students, else "sigmoid".
    """

    user_emb: jnp.ndarray
    item_emb: jnp.ndarray
    item_ids: jnp.ndarray | None
    full_logits: jnp.ndarray | None
    logits_at: Callable
    ctr_logit: jnp.ndarray | None = None
    rank_form: str = "sigmoid"


@dataclasses.dataclass
class TeacherView:
    """Teacher outputs for a batch (the caller puts them under stop_gradient).

    Attributes:
      user_vec: [B, dt]; item_vec: [I, dt]; item_bias: [I].
      temperature: the teacher's own logit temperature.
      topk_items, topk_scores: [B, K] its top K (training items excluded; -1 pads).
      genre_prob: [I, G] its genre probabilities, or None (a teacher without a genre head).
      ctr_prob: [B] its CTR probabilities of the batch pairs, or None.
    """

    user_vec: jnp.ndarray
    item_vec: jnp.ndarray
    item_bias: jnp.ndarray
    temperature: float
    topk_items: jnp.ndarray
    topk_scores: jnp.ndarray
    genre_prob: jnp.ndarray | None
    ctr_prob: jnp.ndarray | None

    def logits_full(self):
        return (self.user_vec @ self.item_vec.T + self.item_bias) / self.temperature

    def logits_at(self, items):
        vec = self.item_vec[items]  # [B, C, dt]
        return ((self.user_vec[:, None] * vec).sum(-1) + self.item_bias[items]) / self.temperature


@dataclasses.dataclass
class ModelSpec:
    """Everything the trainer and evaluator need to know about a model.

    Attributes:
      name: output name (folder, results key), e.g. "mf_kd".
      init: rng -> params.
      loss_fn: (params, batch, side, frozen, rng) -> (loss, sums): what is optimised.
      source: the training examples (``rec_jax.data.sources``).
      score_fn: (params, query, side) -> [B, num_items] scores.
      make_query: (users, part) -> host arrays for score_fn.
      module: the Linen module (parameter counts, serving timings, mesh towers).
      embed_dim: width of the user/item vectors a distillation projector reads.
      hard_fn: (params, batch, side, rng) -> (loss, outputs, count): the
        model's own task on its labels (the loss of a plain model, the hard
        term of a distilled one).
      view_fn: (params, batch, side, rng) -> StudentView, for students
        (None for models that are never distilled into).
      frozen: params used in the forward pass but never trained (online teacher).
      label_fn: param path -> optimizer group (None: one group).
      ctr_logit_fn: (params, query, items, side) -> logits, for CTR models.
      freeze_steps: optimizer group -> initial steps with zero updates.
      user_vectors_fn: (params, query, side) -> [B, d], and
      item_table_fn: (params, side) -> ([num_items, d], [num_items] bias or
        None), for models that score by a dot product (MF, SASRec): mesh mode
        ranks them over a row-sharded table. None: evaluated through score_fn.
    """

    name: str
    init: Callable[[Any], Any]
    loss_fn: LossFn | None
    source: Any
    score_fn: Callable
    make_query: QueryFn
    module: Any = None
    embed_dim: int = 0
    hard_fn: Callable | None = None
    view_fn: Callable | None = None
    frozen: Any = None
    label_fn: Callable | None = None
    ctr_logit_fn: Callable | None = None
    freeze_steps: dict | None = None
    user_vectors_fn: Callable | None = None
    item_table_fn: Callable | None = None
