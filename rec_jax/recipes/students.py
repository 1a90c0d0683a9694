"""The students wired: MF, SASRec and DeepFM as ModelSpecs.

Each family gets its module, its training examples, its own task loss
(``hard_fn``), how a user is queried at evaluation, and what a distillation
objective can read from one forward pass (``view_fn``). The plain model's
loss is its hard loss; ``recipes.kd`` adds the distillation terms.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rec_jax import errors
from rec_jax.data import features as features_lib
from rec_jax.data import raw
from rec_jax.data.interactions import SplitData
from rec_jax.data.sources import CTRSource, NegativeSampler, PairSource, SequenceSource
from rec_jax.distill import objectives, transfer
from rec_jax.models import students
from rec_jax.spec import ModelName, ModelSpec, StudentView


# ---------------------------------------------------------------------------
# Helpers every family shares.
# ---------------------------------------------------------------------------


def shared_text_dim(config, name: ModelName) -> int:
    """Width of the teacher projection a model shares (0: no sharing).

    Raises:
      ValueError: an unknown config.transfer.share, or sharing where a
        `_fusion` student's input is not the text the teacher's projection read.
    """
    share = config.transfer.share
    if share not in transfer.SHARES:
        raise errors.ConfigError(f"config.transfer.share={share!r}: use one of {transfer.SHARES}")
    if share == "none" or not name.fusion:
        # Only `_fusion` models have a text path to share into; the rest of a
        # run (plain, _kd, _transfer) ignores the key, so one config serves a grid.
        return 0
    source, freeze = config.fusion.source, config.teacher.freeze
    if source != "text" or freeze != "encoder":
        # The teacher's item_text_proj was trained on frozen, pooled BERT
        # vectors; any other fusion input would feed it something else.
        raise errors.ConfigError(
            f"config.transfer.share={share!r} needs config.fusion.source='text' "
            f"and config.teacher.freeze='encoder' (got {source!r}, {freeze!r})")
    return int(config.teacher.dim)


def module_args(name: ModelName, config, side: dict | None = None) -> dict:
    """Module kwargs from the run config: compute dtype, and fusion for `_fusion` models
    (with the width of the teacher projection it shares, if config.transfer.share)."""
    args = {"dtype": jnp.dtype(config.dtype)}
    shared = shared_text_dim(config, name)
    if not name.fusion:
        return args
    mode = config.fusion.mode
    if mode == "none":
        raise errors.ConfigError(
            f"model {name.name!r} asks for fusion but config.fusion.mode is 'none'")
    content = fusion_content(config)
    args = dict(args, fusion=mode, inductive=bool(config.fusion.inductive))
    if content != "text":
        args["fusion_content"] = content
    if "kg" in content:
        args["kg_sizes"] = kg_sizes(side or {})
    if config.fusion.id_dropout:
        args["id_dropout"] = float(config.fusion.id_dropout)
    return dict(args, shared_text_dim=shared) if shared else args


FUSION_SOURCES = ("teacher", "text", "kg", "text+kg")


def fusion_content(config) -> str:
    """What a `_fusion` student's content path reads, from config.fusion.source:
    "text" (the teacher's item vectors or frozen BERT text vectors, as side
    "fusion_text"), "kg" (its own knowledge-graph encoder) or "text+kg"."""
    source = config.fusion.source
    if source not in FUSION_SOURCES:
        raise errors.ConfigError(f"config.fusion.source={source!r}: use one of {FUSION_SOURCES}")
    return {"teacher": "text", "text": "text"}.get(source, source)


def kg_sizes(side: dict) -> tuple[int, int]:
    """(num_entities, num_relations) of the item graph in the side tables (host arrays;
    codes are contiguous from 0, so the largest code + 1 is the table size)."""
    if "item_kg_entity" not in side:
        raise errors.ConfigError("a knowledge-graph model needs the item graph "
                                 "(side table item_kg_entity); the job reads it when a model "
                                 "asks for it (config.teacher.use_kg, config.fusion.source)")
    return (int(np.max(side["item_kg_entity"])) + 1, int(np.max(side["item_kg_relation"])) + 1)


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


def count(x) -> jnp.ndarray:
    return jnp.asarray(x.shape[0], jnp.float32)


def init_from(module, source, side):
    def init(rng):
        batch = source.make_batch(np.arange(2), np.random.default_rng(0))
        # One compiled init instead of hundreds of small op-by-op dispatches.
        return jax.jit(lambda r: module.init(r, batch, side)["params"])(rng)
    return init


def apply_train(module, params, batch, side, rng):
    """The module's training forward pass (dropout on)."""
    return module.apply({"params": params}, batch, side, deterministic=False,
                        rngs={"dropout": rng})


def plain_loss(hard_fn):
    """A model trained on its own task only: loss_fn from its hard_fn."""
    def loss_fn(params, batch, side, frozen, rng):
        del frozen
        loss, out, n = hard_fn(params, batch, side, rng)
        sums = {"loss": loss * n, "examples": n}
        for term, value in out.get("terms", {}).items():
            sums[f"{term}_loss"] = value * n
        return loss, sums
    return loss_fn


def _dot_at(user, table, bias=None):
    """items [B, C] -> [B, C] logits u·v (+ b), computed directly: cheaper to
    differentiate than a gather from the [B, I] logit matrix."""
    def logits_at(items):
        out = jnp.einsum("bd,bcd->bc", user, table[items])
        return out if bias is None else out + bias[items]
    return logits_at


def _method_fn(module, method):
    """(params, *args) -> module.apply(params, *args, method=method), deterministic."""
    def fn(params, *args):
        return module.apply({"params": params}, *args, method=method)
    return fn


# ---------------------------------------------------------------------------
# MF
# ---------------------------------------------------------------------------


MF_LOSSES = ("bpr", "softmax")


def mf_spec(name: ModelName, config, data: SplitData, side: dict) -> ModelSpec:
    """Matrix factorisation with BPR (one sampled negative per positive) or a
    softmax over the whole catalogue (config.model.mf.loss)."""
    cfg, module_kw = config.model.mf, module_args(name, config, side)
    if cfg.loss not in MF_LOSSES:
        raise errors.ConfigError(f"config.model.mf.loss={cfg.loss!r}: use one of {MF_LOSSES}")
    module = students.MF(data.num_users, data.num_items, cfg.embed_dim, **module_kw)
    source = PairSource(data, negative_sampler(data, cfg.train), cfg.train.num_negatives)

    def hard_fn(params, batch, side, rng):
        out = apply_train(module, params, batch, side, rng)
        if cfg.loss == "bpr":
            loss = objectives.bpr_loss(out["score"], out["neg_score"])
        else:
            # Full-catalogue cross-entropy: the positive against every item, the
            # loss the KD terms add; so a plain "MF with softmax" exists too.
            user = out["user_emb"]
            items = module.apply({"params": params}, side, method=students.MF.item_vectors)
            bias = module.apply({"params": params}, side, method=students.MF.bias)
            loss = objectives.softmax_ce_loss(user @ items.T + bias, batch["item"])
        if cfg.l2_embed:
            # RecBole-style L2 on the embeddings used in the batch.
            loss += cfg.l2_embed * (jnp.square(out["user_emb"]).sum(-1).mean()
                                    + jnp.square(out["item_emb"]).sum(-1).mean())
        return loss, out, count(batch["user"])

    def view_fn(params, batch, side, rng):
        del rng
        user = params["user_embed"]["embedding"][batch["user"]]
        items = module.apply({"params": params}, side, method=students.MF.item_vectors)
        bias = module.apply({"params": params}, side, method=students.MF.bias)
        return StudentView(user, items, None, user @ items.T + bias, _dot_at(user, items, bias),
                           rank_form="softmax" if cfg.loss == "softmax" else "sigmoid")

    def item_table_fn(params, side):
        return (module.apply({"params": params}, side, method=students.MF.item_vectors),
                module.apply({"params": params}, side, method=students.MF.bias))

    return ModelSpec(name=name.name, init=init_from(module, source, side),
                     loss_fn=plain_loss(hard_fn), source=source,
                     score_fn=_method_fn(module, students.MF.score_all), make_query=user_query,
                     module=module, embed_dim=cfg.embed_dim, hard_fn=hard_fn, view_fn=view_fn,
                     user_vectors_fn=_method_fn(module, students.MF.user_vectors),
                     item_table_fn=item_table_fn)


# ---------------------------------------------------------------------------
# SASRec
# ---------------------------------------------------------------------------


def sasrec_spec(name: ModelName, config, data: SplitData, side: dict) -> ModelSpec:
    """SASRec with cross-entropy over all items (config.model.sasrec.sampled_negatives
    0) or over N items drawn uniformly per step (N > 0)."""
    cfg, module_kw = config.model.sasrec, module_args(name, config, side)
    num_sampled = cfg.get("sampled_negatives", 0)
    if num_sampled < 0:
        raise errors.ConfigError(f"config.model.sasrec.sampled_negatives={num_sampled}: "
                                 "use 0 (full softmax) or a positive count")
    module = students.SASRec(data.num_items, cfg.embed_dim, cfg.max_len, cfg.num_layers,
                             cfg.num_heads, cfg.dropout, **module_kw)
    source = SequenceSource(data, cfg.max_len)

    def full_hard_fn(params, batch, side, rng):
        out = apply_train(module, params, batch, side, rng)
        mask = batch["targets"] >= 0
        loss = objectives.softmax_ce_loss(out["logits"], batch["targets"], mask)
        return loss, out, mask.sum().astype(jnp.float32)

    def sampled_hard_fn(params, batch, side, rng):
        # [B, L, N] logits against items shared by the device batch instead of
        # [B, L, num_items]: the step's cost stops growing with the catalogue,
        # and the item table is only looked up (row-sparse with sparse_tables).
        dropout_rng, draw_rng = jax.random.split(rng)
        states, items = module.apply({"params": params}, batch, side, False,
                                     method=students.SASRec.sequence_states,
                                     rngs={"dropout": dropout_rng})
        mask = batch["targets"] >= 0
        targets = jnp.where(mask, batch["targets"], 0)
        sampled = jax.random.randint(draw_rng, (num_sampled,), 0, data.num_items)
        pos = jnp.einsum("bld,bld->bl", states, items[targets])
        # Each draw stands for num_items / num_sampled items of the catalogue
        # (uniform importance weight), so the sampled sum estimates the full
        # softmax's normaliser; without it negatives weigh num_sampled /
        # num_items of what they weigh in the full softmax.
        neg = states @ items[sampled].T + jnp.log(data.num_items / num_sampled)
        loss = objectives.sampled_softmax_ce_loss(pos, neg, sampled == targets[..., None], mask)
        return loss, {"user_emb": states[:, -1]}, mask.sum().astype(jnp.float32)

    hard_fn = sampled_hard_fn if num_sampled else full_hard_fn

    def view_fn(params, batch, side, rng):
        # Distillation targets describe the user after their whole training
        # history, so the student reads the same window (batch["kd_inputs"]),
        # not the shifted training inputs.
        user = module.apply({"params": params}, {"inputs": batch["kd_inputs"]}, side, False,
                            method=students.SASRec.user_vectors, rngs={"dropout": rng})
        items = module.apply({"params": params}, side, method=students.SASRec.item_vectors)
        return StudentView(user, items, None, user @ items.T, _dot_at(user, items),
                           rank_form="softmax")

    def item_table_fn(params, side):
        return module.apply({"params": params}, side, method=students.SASRec.item_vectors), None

    return ModelSpec(name=name.name, init=init_from(module, source, side),
                     loss_fn=plain_loss(hard_fn), source=source,
                     score_fn=_method_fn(module, students.SASRec.score_all),
                     make_query=history_query(data, cfg.max_len), module=module,
                     embed_dim=cfg.embed_dim, hard_fn=hard_fn, view_fn=view_fn,
                     user_vectors_fn=_method_fn(module, students.SASRec.user_vectors),
                     item_table_fn=item_table_fn)


# ---------------------------------------------------------------------------
# DeepFM
# ---------------------------------------------------------------------------


DEEPFM_LABELS = ("implicit", "rating")


def deepfm_spec(name: ModelName, config, data: SplitData, side: dict) -> ModelSpec:
    """DeepFM with sampled unobserved negatives, trained on every interaction as a
    positive (config.model.deepfm.label="implicit": the task the ranking metrics
    score) or as a CTR model ("rating": positive when rating >=
    config.data.ctr_threshold, the task AUC / LogLoss score)."""
    cfg, module_kw = config.model.deepfm, module_args(name, config, side)
    if cfg.label not in DEEPFM_LABELS:
        raise errors.ConfigError(f"config.model.deepfm.label={cfg.label!r}: use one of {DEEPFM_LABELS}")
    vocab = tuple(sorted(features_lib.vocab_sizes(side).items()))
    module = students.DeepFM(data.num_users, data.num_items, vocab, len(raw.GENRES),
                             cfg.embed_dim, tuple(cfg.hidden), cfg.dropout, **module_kw)
    # Ratings run from 1: a threshold of 0 makes every observed pair a positive.
    threshold = config.data.ctr_threshold if cfg.label == "rating" else 0.0
    source = CTRSource(data, negative_sampler(data, cfg.train), threshold,
                       cfg.train.num_negatives)

    def hard_fn(params, batch, side, rng):
        out = apply_train(module, params, batch, side, rng)
        logits = jnp.concatenate([out["ctr_logit"][:, None], out["neg_logit"]], axis=1)
        labels = jnp.concatenate([batch["label"][:, None], jnp.zeros_like(out["neg_logit"])],
                                 axis=1)
        return objectives.bce_loss(logits, labels), out, count(batch["user"])

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

    def ctr_logit_fn(params, query, items, side):
        return module.apply({"params": params}, query["user"], items, side,
                            method=students.DeepFM.pair_logits)

    return ModelSpec(name=name.name, init=init_from(module, source, side),
                     loss_fn=plain_loss(hard_fn), source=source,
                     score_fn=_method_fn(module, students.DeepFM.score_all),
                     make_query=user_query, module=module, embed_dim=cfg.embed_dim,
                     hard_fn=hard_fn, view_fn=view_fn, ctr_logit_fn=ctr_logit_fn)


FAMILIES = {"mf": mf_spec, "sasrec": sasrec_spec, "deepfm": deepfm_spec}
