"""Model name -> ModelSpec: module, training examples, loss and scoring wired up.

The trainer and evaluator only see ModelSpec; everything model-specific
(which batches, which hard loss, how a user is queried at evaluation) is
decided here.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rec_jax.data.interactions import SplitData
from rec_jax.data.pipeline import NegativeSampler, PairSource
from rec_jax.distill import objectives
from rec_jax.models import students
from rec_jax.train.trainer import ModelSpec


def negative_sampler(data: SplitData, train_cfg) -> NegativeSampler:
    return NegativeSampler(data, train_cfg.negatives, train_cfg.popularity_power)


def user_query(users: np.ndarray, part: str) -> dict:
    del part
    return {"user": users}


def count(batch_leaf) -> jnp.ndarray:
    return jnp.asarray(batch_leaf.shape[0], jnp.float32)


def build_mf(name: str, cfg, data: SplitData, side: dict) -> ModelSpec:
    """BPR matrix factorisation."""
    module = students.MF(data.num_users, data.num_items, cfg.embed_dim)
    source = PairSource(data, negative_sampler(data, cfg.train), cfg.train.num_negatives)

    def init(rng):
        batch = source.make_batch(np.arange(2), np.random.default_rng(0))
        return module.init(rng, batch, side)["params"]

    def loss_fn(params, batch, side, frozen, rng):
        del frozen
        out = module.apply({"params": params}, batch, side, deterministic=False,
                           rngs={"dropout": rng})
        loss = objectives.bpr_loss(out["score"], out["neg_score"])
        if cfg.l2_embed:
            # RecBole-style L2 on the embeddings used in the batch.
            loss += cfg.l2_embed * (jnp.square(out["user_emb"]).sum(-1).mean()
                                    + jnp.square(out["item_emb"]).sum(-1).mean())
        n = count(batch["user"])
        return loss, {"loss": loss * n, "examples": n}

    def score_fn(params, query, side):
        return module.apply({"params": params}, query, side, method=students.MF.score_all)

    return ModelSpec(name=name, init=init, loss_fn=loss_fn, source=source, score_fn=score_fn,
                     make_query=user_query, module=module)


BUILDERS = {"mf": build_mf}


def build(name: str, config, data: SplitData, side: dict) -> ModelSpec:
    base = name.split("_")[0]
    if base not in BUILDERS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(BUILDERS)} and 'pop'")
    return BUILDERS[base](name, config.model[base], data, side)


def num_params(params: Any) -> int:
    return int(sum(np.size(x) for x in jax.tree.leaves(params)))
