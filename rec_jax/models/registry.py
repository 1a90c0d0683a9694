"""Model name -> ModelSpec: module, training examples, loss and scoring wired up.

The trainer and evaluator only see ModelSpec. Everything model-specific
(which batches, which hard loss, how a user is queried at evaluation, what a
distillation objective can read from a forward pass) is decided here, in
one ``Parts`` per model family; ``<model>_kd`` names wrap the same parts in
the distillation objective (rec_jax.distill.kd).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from rec_jax.data import features as features_lib
from rec_jax.data import raw
from rec_jax.data.interactions import SplitData
from rec_jax.data.pipeline import (CTRSource, NegativeSampler, PairSource, ProfileSource,
                                   SequenceSource)
from rec_jax.distill import objectives, transfer
from rec_jax.models import bert as bert_lib
from rec_jax.models import students
from rec_jax.models import teacher as teacher_lib
from rec_jax.train.trainer import ModelSpec


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
class Parts:
    """A model family's pieces.

    hard_fn(params, batch, side, rng) -> (loss, outputs, count) is the model's
    own task; view_fn(params, batch, side, rng) -> StudentView feeds
    distillation (None for models that are never students).
    user_vectors_fn / item_table_fn (see ModelSpec) are set for models whose
    score is a dot product, which mesh mode ranks over a row-sharded table. The view runs on
    its own (possibly smaller) slice of the batch, so it recomputes what it
    needs rather than reusing hard_fn's outputs.
    """

    name: str
    module: Any
    source: Any
    init: Callable
    hard_fn: Callable
    score_fn: Callable
    make_query: Callable
    embed_dim: int
    view_fn: Callable | None = None
    ctr_logit_fn: Callable | None = None
    label_fn: Callable | None = None
    user_vectors_fn: Callable | None = None
    item_table_fn: Callable | None = None


def name_flags(name: str) -> set[str]:
    """Variant flags in a model name: `mf_kd_transfer_fusion` -> {kd, transfer, fusion}."""
    flags = set(name.split("_")[1:])
    unknown = flags - {"kd", "transfer", "fusion", "textonly"}
    if unknown:
        raise ValueError(f"model {name!r}: unknown variant(s) {sorted(unknown)}; names are "
                         "<model>[_kd][_transfer][_fusion] (teacher[_textonly])")
    return flags


def module_args(name: str, config) -> dict:
    """Module kwargs from the run config: compute dtype, and fusion for `_fusion` models
    (with the width of the teacher projection it shares, if config.transfer.share)."""
    args = {"dtype": jnp.dtype(config.dtype)}
    fused = "fusion" in name_flags(name)
    shared = transfer.shared_text_dim(config, name, fused)
    if not fused:
        return args
    mode = config.enhance.mode
    if mode == "none":
        raise ValueError(f"model {name!r} asks for fusion but config.enhance.mode is 'none'")
    args = dict(args, fusion=mode, inductive=bool(config.enhance.inductive))
    return dict(args, shared_text_dim=shared) if shared else args


def negative_sampler(data: SplitData, train_cfg) -> NegativeSampler:
    return NegativeSampler(data, train_cfg.negatives, train_cfg.popularity_power)


def user_query(users: np.ndarray, part: str) -> dict:
    del part
    return {"user": users}


def history_query(data: SplitData, max_len: int):
    """make_query for sequential models: the user and their latest history."""
    def make_query(users: np.ndarray, part: str) -> dict:
        return {"user": users, "inputs": data.history_window(users, part, max_len)}
    return make_query


def _count(x) -> jnp.ndarray:
    return jnp.asarray(x.shape[0], jnp.float32)


def _init_from(module, source, side):
    def init(rng):
        batch = source.make_batch(np.arange(2), np.random.default_rng(0))
        # One compiled init instead of hundreds of small op-by-op dispatches.
        return jax.jit(lambda r: module.init(r, batch, side)["params"])(rng)
    return init


def _apply(module, params, batch, side, rng):
    return module.apply({"params": params}, batch, side, deterministic=False,
                        rngs={"dropout": rng})


def _dot_at(user, table, bias=None):
    """items [B, C] -> [B, C] logits u·v (+ b), computed directly: cheaper to
    differentiate than a gather from the [B, I] logit matrix."""
    def logits_at(items):
        out = jnp.einsum("bd,bcd->bc", user, table[items])
        return out if bias is None else out + bias[items]
    return logits_at


def _user_vectors_fn(module):
    """(params, query, side) -> [B, d]: the module's user tower, deterministic."""
    def user_vectors_fn(params, query, side):
        return module.apply({"params": params}, query, side, method=type(module).user_vectors)
    return user_vectors_fn


# ---------------------------------------------------------------------------
# MF
# ---------------------------------------------------------------------------


def mf_parts(name: str, cfg, data: SplitData, side: dict, **module_kw) -> Parts:
    """BPR matrix factorisation."""
    module = students.MF(data.num_users, data.num_items, cfg.embed_dim, **module_kw)
    source = PairSource(data, negative_sampler(data, cfg.train), cfg.train.num_negatives)

    def hard_fn(params, batch, side, rng):
        out = _apply(module, params, batch, side, rng)
        loss = objectives.bpr_loss(out["score"], out["neg_score"])
        if cfg.l2_embed:
            # RecBole-style L2 on the embeddings used in the batch.
            loss += cfg.l2_embed * (jnp.square(out["user_emb"]).sum(-1).mean()
                                    + jnp.square(out["item_emb"]).sum(-1).mean())
        return loss, out, _count(batch["user"])

    def view_fn(params, batch, side, rng):
        del rng
        user = params["user_embed"]["embedding"][batch["user"]]
        items = module.apply({"params": params}, side, method=students.MF.item_vectors)
        bias = module.apply({"params": params}, side, method=students.MF.bias)
        return StudentView(user, items, None, user @ items.T + bias, _dot_at(user, items, bias))

    def score_fn(params, query, side):
        return module.apply({"params": params}, query, side, method=students.MF.score_all)

    def item_table_fn(params, side):
        return (module.apply({"params": params}, side, method=students.MF.item_vectors),
                module.apply({"params": params}, side, method=students.MF.bias))

    return Parts(name, module, source, _init_from(module, source, side), hard_fn, score_fn,
                 user_query, cfg.embed_dim, view_fn,
                 user_vectors_fn=_user_vectors_fn(module), item_table_fn=item_table_fn)


# ---------------------------------------------------------------------------
# SASRec
# ---------------------------------------------------------------------------


def sasrec_parts(name: str, cfg, data: SplitData, side: dict, **module_kw) -> Parts:
    """SASRec with full-softmax cross-entropy over all items."""
    module = students.SASRec(data.num_items, cfg.embed_dim, cfg.max_len, cfg.num_layers,
                             cfg.num_heads, cfg.dropout, **module_kw)
    source = SequenceSource(data, cfg.max_len)

    def hard_fn(params, batch, side, rng):
        out = _apply(module, params, batch, side, rng)
        mask = batch["targets"] >= 0
        loss = objectives.softmax_ce_loss(out["logits"], batch["targets"], mask)
        return loss, out, mask.sum().astype(jnp.float32)

    def view_fn(params, batch, side, rng):
        # Distillation targets describe the user after their whole training
        # history, so the student reads the same window (batch["kd_inputs"]),
        # not the shifted training inputs.
        user = module.apply({"params": params}, {"inputs": batch["kd_inputs"]}, side, False,
                            method=students.SASRec.user_vectors, rngs={"dropout": rng})
        items = module.apply({"params": params}, side, method=students.SASRec.item_vectors)
        return StudentView(user, items, None, user @ items.T, _dot_at(user, items),
                           rank_form="softmax")

    def score_fn(params, query, side):
        return module.apply({"params": params}, query, side, method=students.SASRec.score_all)

    def item_table_fn(params, side):
        return module.apply({"params": params}, side, method=students.SASRec.item_vectors), None

    return Parts(name, module, source, _init_from(module, source, side), hard_fn, score_fn,
                 history_query(data, cfg.max_len), cfg.embed_dim, view_fn,
                 user_vectors_fn=_user_vectors_fn(module), item_table_fn=item_table_fn)


# ---------------------------------------------------------------------------
# DeepFM
# ---------------------------------------------------------------------------


def deepfm_parts(name: str, cfg, data: SplitData, side: dict, **module_kw) -> Parts:
    """DeepFM trained as a CTR model (label rating >= 4) with sampled unobserved negatives."""
    vocab = tuple(sorted(features_lib.vocab_sizes(side).items()))
    module = students.DeepFM(data.num_users, data.num_items, vocab, len(raw.GENRES),
                             cfg.embed_dim, tuple(cfg.hidden), cfg.dropout, **module_kw)
    source = CTRSource(data, negative_sampler(data, cfg.train), cfg.ctr_threshold,
                       cfg.train.num_negatives)

    def hard_fn(params, batch, side, rng):
        out = _apply(module, params, batch, side, rng)
        logits = jnp.concatenate([out["ctr_logit"][:, None], out["neg_logit"]], axis=1)
        labels = jnp.concatenate([batch["label"][:, None], jnp.zeros_like(out["neg_logit"])],
                                 axis=1)
        return objectives.bce_loss(logits, labels), out, _count(batch["user"])

    def view_fn(params, batch, side, rng):
        def logits_at(items):
            return module.apply({"params": params}, batch["user"], items, side, False,
                                method=students.DeepFM.candidate_logits, rngs={"dropout": rng})
        ctr = module.apply({"params": params}, batch["user"], batch["item"], side, False,
                           method=students.DeepFM.pair_logits, rngs={"dropout": rng})
        # Scoring the whole catalogue per training example is too costly for an
        # MLP model; distillation uses a candidate list instead (full_logits None).
        items = module.apply({"params": params}, batch["item"], side,
                             method=students.DeepFM.item_id_vectors)
        return StudentView(params["user_embed"]["embedding"][batch["user"]], items,
                           batch["item"], None, logits_at, ctr_logit=ctr)

    def score_fn(params, query, side):
        return module.apply({"params": params}, query, side, method=students.DeepFM.score_all)

    def ctr_logit_fn(params, query, items, side):
        return module.apply({"params": params}, query["user"], items, side,
                            method=students.DeepFM.pair_logits)

    return Parts(name, module, source, _init_from(module, source, side), hard_fn, score_fn,
                 user_query, cfg.embed_dim, view_fn, ctr_logit_fn)


# ---------------------------------------------------------------------------
# Teacher
# ---------------------------------------------------------------------------


def teacher_user_tower(cfg, data: SplitData) -> str:
    """config.teacher.user_tower, with "auto" resolved by the split: the causal
    next-item tower for `loo_time`, the whole-profile tower for the splits that
    hold out random interactions (`ratio`, `cold_items`)."""
    tower = cfg.user_tower
    if tower == "auto":
        return "causal" if data.split.name == "loo_time" else "profile"
    if tower not in teacher_lib.USER_TOWERS:
        raise ValueError(f"config.teacher.user_tower={tower!r}: use 'auto' or one of "
                         f"{teacher_lib.USER_TOWERS}")
    return tower


def teacher_tower_args(cfg, data: SplitData) -> dict:
    """The Teacher settings that depend on its user tower (see configs/common.py)."""
    tower = teacher_user_tower(cfg, data)
    if tower == "profile":
        return dict(user_tower=tower, num_layers=cfg.profile_layers, dropout=cfg.profile_dropout,
                    text_scale=cfg.profile_text_scale)
    return dict(user_tower=tower, num_layers=cfg.num_layers, dropout=cfg.dropout, text_scale=1.0)


def teacher_history_len(cfg, data: SplitData) -> int:
    """How many of a user's latest items the teacher's user tower reads."""
    return cfg.profile_len if teacher_user_tower(cfg, data) == "profile" else cfg.max_len


def teacher_parts(name: str, cfg, data: SplitData, side: dict, dtype=jnp.float32) -> Parts:
    """The BERT teacher; `teacher_textonly` drops the ID embeddings."""
    settings = bert_lib.BertSettings.from_hf_config(cfg.bert_path or bert_lib.default_bert_path())
    first_layer = teacher_lib.parse_freeze(cfg.freeze, settings.num_layers)
    module = teacher_module(cfg, data, name, settings, dtype)
    if module.user_tower == "profile":
        source = ProfileSource(data, cfg.profile_len, cfg.profile_holdout, cfg.profile_targets)
    else:
        source = SequenceSource(data, cfg.max_len)
    weights = cfg.loss_weights
    if cfg.softmax not in ("full", "sampled"):
        raise ValueError(f"config.teacher.softmax={cfg.softmax!r}: use 'full' or 'sampled'")
    sampled = cfg.softmax == "sampled"

    def init(rng):
        params = _init_from(module, source, side)(rng)
        if first_layer is not None:
            params = teacher_lib.load_text_tower(params, cfg.bert_path or None)
        return params

    def hard_fn(params, batch, side, rng):
        drop_rng, sample_rng = jax.random.split(rng)
        negatives = (jax.random.randint(sample_rng, (cfg.num_sampled,), 0, data.num_items)
                     if sampled else None)
        out = module.apply({"params": params}, batch, side, deterministic=False,
                           sampled=negatives, rngs={"dropout": drop_rng})
        mask = batch["targets"] >= 0
        targets = jnp.zeros_like(batch["targets"]) if sampled else batch["targets"]
        terms = {
            "rank": objectives.softmax_ce_loss(out["logits"], targets, mask),
            "ctr": objectives.bce_loss(out["ctr_logit"],
                                       batch["target_ratings"] >= cfg.ctr_threshold, mask),
            "genre": objectives.bce_loss(out["genre_logits"], side["item_genres"]),
        }
        out["terms"] = terms
        return objectives.weighted_total(terms, weights), out, mask.sum().astype(jnp.float32)

    def score_fn(params, query, side):
        return module.apply({"params": params}, query, side, method=teacher_lib.Teacher.score_all)

    def ctr_logit_fn(params, query, items, side):
        return module.apply({"params": params}, query, items, side,
                            method=teacher_lib.Teacher.ctr_for_pairs)

    def label_fn(path):
        return "encoder" if path[0] == "text" else "heads"

    return Parts(name, module, source, init, hard_fn, score_fn,
                 history_query(data, teacher_history_len(cfg, data)),
                 cfg.dim, None, ctr_logit_fn, label_fn if first_layer is not None else None)


def teacher_module(cfg, data: SplitData, name: str = "teacher",
                   settings: bert_lib.BertSettings | None = None,
                   dtype=jnp.float32) -> teacher_lib.Teacher:
    settings = settings or bert_lib.BertSettings.from_hf_config(
        cfg.bert_path or bert_lib.default_bert_path())
    return teacher_lib.Teacher(
        data.num_users, data.num_items, len(raw.GENRES), cfg.dim, cfg.max_len,
        num_heads=cfg.num_heads, use_ids=cfg.use_ids and not name.endswith("_textonly"),
        use_text=cfg.use_text, user_ids=cfg.user_ids, temperature=cfg.temperature,
        bert_settings=settings,
        text_first_layer=teacher_lib.parse_freeze(cfg.freeze, settings.num_layers),
        dtype=dtype, ffn_mult=cfg.ffn_mult, **teacher_tower_args(cfg, data))


PARTS = {"mf": mf_parts, "sasrec": sasrec_parts, "deepfm": deepfm_parts,
         "teacher": teacher_parts}


def model_config(config, name: str):
    """The config section of a model name (`mf_kd` -> config.model.mf)."""
    base = name.split("_")[0]
    return config.teacher if base == "teacher" else config.model[base]


def parts(name: str, config, data: SplitData, side: dict) -> Parts:
    base = name.split("_")[0]
    if base not in PARTS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(PARTS)} and 'pop'")
    name_flags(name)
    if base == "teacher":
        return teacher_parts(name, config.teacher, data, side, jnp.dtype(config.dtype))
    return PARTS[base](name, model_config(config, name), data, side, **module_args(name, config))


def plain_spec(p: Parts) -> ModelSpec:
    """A model trained on its own task only."""
    def loss_fn(params, batch, side, frozen, rng):
        del frozen
        loss, out, n = p.hard_fn(params, batch, side, rng)
        sums = {"loss": loss * n, "examples": n}
        for term, value in out.get("terms", {}).items():
            sums[f"{term}_loss"] = value * n
        return loss, sums

    return ModelSpec(name=p.name, init=p.init, loss_fn=loss_fn, source=p.source,
                     score_fn=p.score_fn, make_query=p.make_query, label_fn=p.label_fn,
                     ctr_logit_fn=p.ctr_logit_fn, module=p.module,
                     user_vectors_fn=p.user_vectors_fn, item_table_fn=p.item_table_fn)


def num_params(params: Any) -> int:
    return int(sum(np.size(x) for x in jax.tree.leaves(params)))
