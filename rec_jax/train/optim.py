"""Optimizers from config: optax chains with schedules, groups and freezing.

``config.optim`` keys: ``name`` (adam | adamw | adagrad | sgd), ``lr``,
``schedule`` (constant | cosine | linear, after ``warmup_steps`` of linear
warm-up), ``weight_decay`` (decoupled, adamw), ``l2`` (coupled L2 added to
the gradient, the seed's "L2 regularisation"), ``grad_clip`` (global norm,
0 = off), ``momentum`` (sgd).

Parameter groups: a label function maps each parameter path to a group name;
``group_lr`` scales a group's learning rate, and the group ``frozen`` gets
zero updates (``optax.set_to_zero``), which is how frozen layers stay put
without leaving the optimizer's pytree.

``sparse_tables`` (default False): lazy Adam on embedding tables, whose rows
are updated only when a step reads them (:mod:`rec_jax.train.sparse_tables`),
so a step's cost no longer grows with the tables; Adam only, one group.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import optax

from rec_jax import errors
from rec_jax.train import sparse_tables


def schedule(cfg, total_steps: int, scale: float = 1.0) -> optax.Schedule:
    lr = cfg.lr * scale
    warmup = int(cfg.warmup_steps)
    decay_steps = max(1, total_steps - warmup)
    kind = cfg.schedule
    if kind == "constant":
        main = optax.constant_schedule(lr)
    elif kind == "cosine":
        main = optax.cosine_decay_schedule(lr, decay_steps)
    elif kind == "linear":
        main = optax.linear_schedule(lr, 0.0, decay_steps)
    else:
        raise errors.ConfigError(f"config.optim.schedule: unknown schedule {kind!r} "
                                 "(constant | cosine | linear)")
    if warmup:
        return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])
    return main


def _base(cfg, lr) -> optax.GradientTransformation:
    name = cfg.name
    if name == "adam":
        return optax.adam(lr)
    if name == "adamw":
        return optax.adamw(lr, weight_decay=cfg.weight_decay)
    if name == "adagrad":
        return optax.adagrad(lr)
    if name == "sgd":
        return optax.sgd(lr, momentum=cfg.momentum or None)
    raise errors.ConfigError(f"config.optim.name: unknown optimizer {name!r} "
                             "(adam | adamw | adagrad | sgd)")


def _one_group(cfg, total_steps, scale):
    parts = []
    if cfg.grad_clip:
        parts.append(optax.clip_by_global_norm(cfg.grad_clip))
    if cfg.l2:
        parts.append(optax.add_decayed_weights(cfg.l2))
    parts.append(_base(cfg, schedule(cfg, total_steps, scale)))
    return optax.chain(*parts)


def make_optimizer(cfg, total_steps: int, params: Any = None,
                   label_fn: Callable[[tuple[str, ...]], str] | None = None,
                   freeze_steps: dict[str, int] | None = None
                   ) -> optax.GradientTransformation:
    """Builds the optimizer.

    Args:
      cfg: config.optim of the model.
      total_steps: steps of the whole run (for decay schedules).
      params: the param tree (needed only with label_fn).
      label_fn: maps a param path (tuple of names) to a group label.
      freeze_steps: group label -> number of initial steps with zero updates
        (e.g. transferred embeddings held fixed during a warm-up).

    Returns:
      An optax transformation (with ``cfg.sparse_tables``, a
      ``sparse_tables.RowSparseAdam``, which the train step recognises).
    """
    if cfg.get("sparse_tables", False):
        return _row_sparse(cfg, total_steps, label_fn, freeze_steps)
    if label_fn is None:
        return _one_group(cfg, total_steps, 1.0)
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
    labels = flax.traverse_util.unflatten_dict({k: label_fn(k) for k in flat})
    group_lr = dict(cfg.group_lr)
    freeze_steps = freeze_steps or {}
    transforms = {}
    for label in set(flax.traverse_util.flatten_dict(labels).values()):
        if label == "frozen":
            transforms[label] = optax.set_to_zero()
            continue
        group = _one_group(cfg, total_steps, float(group_lr.get(label, 1.0)))
        hold = int(freeze_steps.get(label, 0))
        if hold:
            # Zero updates until `hold` steps have passed, then the group's
            # normal updates (its optimizer state keeps accumulating meanwhile).
            group = optax.chain(group, optax.scale_by_schedule(
                lambda step, hold=hold: (step >= hold).astype("float32")))
        transforms[label] = group
    return optax.multi_transform(transforms, labels)


def _row_sparse(cfg, total_steps, label_fn, freeze_steps) -> sparse_tables.RowSparseAdam:
    """Lazy Adam for ``cfg.sparse_tables``; what it cannot do is refused up front."""
    if cfg.name != "adam":
        raise errors.ConfigError(f"config.optim.sparse_tables needs config.optim.name='adam' "
                                 f"(lazy Adam), got {cfg.name!r}")
    for key in ("l2", "weight_decay", "grad_clip"):
        if cfg[key]:
            # Each would touch every row every step, which is what the path avoids.
            raise errors.ConfigError(f"config.optim.sparse_tables does not combine with "
                                     f"config.optim.{key}={cfg[key]} (set it to 0)")
    if label_fn is not None or freeze_steps or dict(cfg.group_lr):
        raise errors.ConfigError("config.optim.sparse_tables supports one parameter group only "
                                 "(no group_lr, frozen or held-fixed parameters; this model "
                                 "has groups)")
    return sparse_tables.row_sparse_adam(schedule(cfg, total_steps))
