"""The one train step, shared by the teacher and every student.

``loss_fn(params, batch, side, frozen, rng) -> (loss, sums)`` is all a model
brings: ``side`` holds per-user / per-item feature tables, ``frozen`` holds
parameters that take part in the forward pass but never train (a frozen
encoder, or the teacher during online distillation).

One pure update, :func:`apply_update`, runs under two parallel layouts:

* **pmap** (the default, :func:`make_pmapped_step`): ``jax.pmap`` over all
  devices on axis ``"batch"``; every device holds the whole model and its
  share of the batch; gradients and metric sums are averaged / summed across
  devices (and hosts) with ``lax.pmean`` / ``lax.psum``.
* **mesh** (:mod:`rec_jax.train.mesh`): ``jax.jit`` with ``NamedSharding``s
  on a ("data", "model") mesh, item tables row-sharded on "model"; the loss
  sees the global batch, so its reductions are global already and no
  collective is written out (XLA inserts them).
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rec_jax.sharding import BATCH as AXIS, device_sharding
from rec_jax.spec import LossFn
from rec_jax.train import sparse_tables




@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


def init_state(params, tx: optax.GradientTransformation) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def step_key(base_key: jax.Array, step: jax.Array, shard: jax.Array | int) -> jax.Array:
    """The key of one step on one batch shard: base key folded with both.

    Folding the step (not splitting a carried key) makes a resumed run draw
    the same numbers; folding the shard makes pmap's devices draw different
    ones. Mesh mode has a single, global batch shard: index 0.
    """
    return jax.random.fold_in(jax.random.fold_in(base_key, step), shard)


def apply_update(state: TrainState, batch: dict, side: Any, frozen: Any, key: jax.Array, *,
                 loss_fn: LossFn, tx: optax.GradientTransformation,
                 mean_grads: Callable = lambda g: g, sum_metrics: Callable = lambda s: s,
                 gather_shards: Callable = lambda x: x):
    """The pure core of every step: loss, gradient, reduction, optimizer update.

    Args:
      mean_grads: averages gradients over batch shards (identity when `batch`
        is the whole global batch, as under jit).
      sum_metrics: sums metric sums over batch shards (identity likewise).
      gather_shards: concatenates an array over batch shards (identity
        likewise); the row gradients of ``config.optim.sparse_tables``
        (a `sparse_tables.RowSparseAdam` tx) are gathered, not averaged, since
        each shard reads other rows.

    Returns:
      (new_state, sums): sums over the batch (plus `nonfinite`: > 0 when the
      loss was NaN/inf on some shard).
    """
    if isinstance(tx, sparse_tables.RowSparseAdam):
        params, opt_state, sums = sparse_tables.sparse_update_step(
            state.params, state.opt_state, batch, side, frozen, key, loss_fn=loss_fn, tx=tx,
            mean_grads=mean_grads, sum_metrics=sum_metrics, gather_shards=gather_shards)
        return TrainState(state.step + 1, params, opt_state), sums
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, sums), grads = grad_fn(state.params, batch, side, frozen, key)
    grads = mean_grads(grads)
    sums = dict(sums)
    sums["nonfinite"] = (~jnp.isfinite(loss)).astype(jnp.float32)
    sums = sum_metrics(sums)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(state.step + 1, params, opt_state), sums


def train_step(state: TrainState, batch: dict, side: Any, frozen: Any, base_key: jax.Array,
               *, loss_fn: LossFn, tx: optax.GradientTransformation):
    """One optimisation step on this device's share of the global batch (inside pmap).

    Randomness (dropout, sampled candidates) comes from the run's key folded
    with the step and the device index, so a resumed run draws the same
    numbers and no two devices draw the same.

    Returns:
      (new_state, sums): sums are metric sums over the global batch.
    """
    key = step_key(base_key, state.step, jax.lax.axis_index(AXIS))
    # Each device holds an equal share, so the mean of device-mean gradients
    # is the gradient of the global-batch mean loss.
    return apply_update(state, batch, side, frozen, key, loss_fn=loss_fn, tx=tx,
                        mean_grads=lambda g: jax.lax.pmean(g, AXIS),
                        sum_metrics=lambda s: jax.lax.psum(s, AXIS),
                        gather_shards=lambda x: jax.lax.all_gather(x, AXIS, tiled=True))


def global_train_step(state: TrainState, batch: dict, side: Any, frozen: Any,
                      base_key: jax.Array, *, loss_fn: LossFn,
                      tx: optax.GradientTransformation):
    """One step on the whole global batch (under jit; mesh mode).

    The loss's own means and sums run over the global batch, so no collective
    is needed. The key is folded with shard 0: a model that draws randomness
    of batch shape (dropout) draws one global mask, the one a one-device pmap
    run draws, not the per-device masks of a multi-device pmap run (those
    would need the batch split the same way; results agree in distribution,
    and exactly when the loss uses no randomness, e.g. BPR-MF).
    """
    key = step_key(base_key, state.step, 0)
    return apply_update(state, batch, side, frozen, key, loss_fn=loss_fn, tx=tx)


def donated_state_args() -> tuple[int, ...]:
    """Donate the state to pmap except on CPU.

    Donation lets an accelerator update the state in place (no second copy
    of params and moments). On the XLA CPU backend a donated pmap step was
    measured 2.5-3x slower than an undonated one once tables are large (BPR-MF
    with 70k users + 11k items x 64, Adam: 45-58 ms vs 18 ms per step; equal
    at ml-100k sizes), while host memory for a second copy is rarely short.
    Mesh mode (plain jit, no device axis) donates on every backend; there
    donation is what makes it fast on CPU too (6.8 ms vs 16 ms).
    """
    return () if jax.default_backend() == "cpu" else (0,)


def make_pmapped_step(loss_fn: LossFn, tx: optax.GradientTransformation):
    """The pmapped step: (state, batch, side, frozen, key) -> (state, sums).

    state, side and frozen carry a leading device axis (replicate them once);
    the key is broadcast. On accelerators the state is donated (its buffers
    are reused); see `donated_state_args` for CPU. A row-sparse tx
    (``config.optim.sparse_tables``) donates on every backend: its update
    writes a step's rows into the tables in place, and without donation XLA
    first copies every table (measured on CPU, BPR-MF with 70k users + 11k
    items: 37 ms per step undonated, 13 ms donated).
    """
    def step(state, batch, side, frozen, key):
        return train_step(state, batch, side, frozen, key, loss_fn=loss_fn, tx=tx)
    donate = (0,) if isinstance(tx, sparse_tables.RowSparseAdam) else donated_state_args()
    return jax.pmap(step, axis_name=AXIS, in_axes=(0, 0, 0, 0, None), donate_argnums=donate)


def replicate(tree: Any) -> Any:
    """Copies a pytree onto every local device: leading axis = local devices."""
    n = jax.local_device_count()
    sharding = device_sharding()
    return jax.tree.map(
        lambda x: jax.device_put(np.broadcast_to(np.asarray(x), (n,) + np.shape(x)), sharding),
        tree)


def unreplicate(tree: Any) -> Any:
    """The first local device's copy, as host numpy arrays."""
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x[0])), tree)
