"""The BERT teacher wired: its module from the config, its examples and its
multi-task loss (ranking, CTR, genres)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rec_jax import errors
from rec_jax.data import raw
from rec_jax.data.interactions import SplitData
from rec_jax.data.sources import ProfileSource, SequenceSource
from rec_jax.distill import objectives
from rec_jax.models import bert as bert_lib
from rec_jax.models import teacher as teacher_lib
from rec_jax.recipes.students import history_query, init_from, kg_sizes, plain_loss
from rec_jax.spec import ModelName, ModelSpec


def bert_settings(cfg) -> bert_lib.BertSettings:
    """The teacher's BERT settings (config.teacher.bert_path, or the bundled MiniLM)."""
    return bert_lib.BertSettings.from_hf_config(cfg.bert_path or bert_lib.default_bert_path())


def first_trainable_layer(cfg) -> int | None:
    """config.teacher.freeze as the first trainable BERT layer (None: all frozen)."""
    return teacher_lib.parse_freeze(cfg.freeze, bert_settings(cfg).num_layers)


def teacher_user_tower(cfg, data: SplitData) -> str:
    """config.teacher.user_tower, with "auto" resolved by the split: the causal
    next-item tower for `loo_time`, the whole-profile tower for the splits that
    hold out random interactions (`ratio`, `cold_items`)."""
    tower = cfg.user_tower
    if tower == "auto":
        return "causal" if data.split.name == "loo_time" else "profile"
    if tower not in teacher_lib.USER_TOWERS:
        raise errors.ConfigError(f"config.teacher.user_tower={tower!r}: use 'auto' or one of "
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


def teacher_module(cfg, data: SplitData, name: str = "teacher",
                   settings: bert_lib.BertSettings | None = None,
                   dtype=jnp.float32, side: dict | None = None) -> teacher_lib.Teacher:
    """The Teacher module of config.teacher (`teacher_textonly`: no ID embeddings;
    `teacher_notext`: no text, the same architecture and budget otherwise)."""
    settings = settings or bert_settings(cfg)
    parsed = ModelName.parse(name)
    return teacher_lib.Teacher(
        data.num_users, data.num_items, len(raw.GENRES), cfg.dim, cfg.max_len,
        num_heads=cfg.num_heads, use_ids=cfg.use_ids and not parsed.textonly,
        use_text=cfg.use_text and not parsed.notext, user_ids=cfg.user_ids,
        temperature=cfg.temperature,
        bert_settings=settings,
        text_first_layer=teacher_lib.parse_freeze(cfg.freeze, settings.num_layers),
        dtype=dtype, ffn_mult=cfg.ffn_mult, id_dropout=float(cfg.id_dropout),
        **kg_args(cfg, side), **teacher_tower_args(cfg, data))


def kg_args(cfg, side: dict | None) -> dict:
    """The teacher's knowledge-graph view (config.teacher.use_kg) as module kwargs."""
    if not cfg.use_kg:
        return {}
    return dict(kg_sizes=kg_sizes(side or {}), kg_scale=float(cfg.kg_scale))


def teacher_spec(name: ModelName, config, data: SplitData, side: dict) -> ModelSpec:
    """The BERT teacher (config.teacher); `teacher_textonly` drops the ID embeddings."""
    cfg, dtype, ctr_threshold = config.teacher, jnp.dtype(config.dtype), config.data.ctr_threshold
    settings = bert_settings(cfg)
    first_layer = teacher_lib.parse_freeze(cfg.freeze, settings.num_layers)
    module = teacher_module(cfg, data, name.name, settings, dtype, side)
    if module.user_tower == "profile":
        source = ProfileSource(data, cfg.profile_len, cfg.profile_holdout, cfg.profile_targets)
    else:
        source = SequenceSource(data, cfg.max_len)
    weights = cfg.loss_weights
    if cfg.softmax not in ("full", "sampled"):
        raise errors.ConfigError(f"config.teacher.softmax={cfg.softmax!r}: use 'full' or 'sampled'")
    sampled = cfg.softmax == "sampled"

    def init(rng):
        params = init_from(module, source, side)(rng)
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
                                       batch["target_ratings"] >= ctr_threshold, mask),
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

    return ModelSpec(name=name.name, init=init, loss_fn=plain_loss(hard_fn), source=source,
                     score_fn=score_fn,
                     make_query=history_query(data, teacher_history_len(cfg, data)),
                     module=module, embed_dim=cfg.dim, hard_fn=hard_fn,
                     label_fn=label_fn if first_layer is not None else None,
                     ctr_logit_fn=ctr_logit_fn)
