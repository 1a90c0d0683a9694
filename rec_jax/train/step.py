"""The one train step, shared by the teacher and every student.

``loss_fn(params, batch, side, frozen, rng) -> (loss, sums)`` is all a model
brings: ``side`` holds per-user / per-item feature tables, ``frozen`` holds
parameters that take part in the forward pass but never train (a frozen
encoder, or the teacher during online distillation). The step is pure,
jitted and ``jax.pmap``-ed over all devices on axis ``"batch"``: gradients
and metric sums are averaged / summed across devices (and hosts).
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

AXIS = "batch"

LossFn = Callable[[Any, dict, Any, Any, jax.Array], tuple[jax.Array, dict]]


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


def init_state(params, tx: optax.GradientTransformation) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def train_step(state: TrainState, batch: dict, side: Any, frozen: Any, base_key: jax.Array,
               *, loss_fn: LossFn, tx: optax.GradientTransformation):
    """One optimisation step on this device's share of the global batch.

    Randomness (dropout, sampled candidates) comes from the run's key folded
    with the step and the device index, so a resumed run draws the same
    numbers and no two devices draw the same.

    Returns:
      (new_state, sums): sums are metric sums over the global batch.
    """
    key = jax.random.fold_in(jax.random.fold_in(base_key, state.step), jax.lax.axis_index(AXIS))
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, sums), grads = grad_fn(state.params, batch, side, frozen, key)
    # Each device holds an equal share, so the mean of device-mean gradients
    # is the gradient of the global-batch mean loss.
    grads = jax.lax.pmean(grads, AXIS)
    sums = dict(sums)
    sums["nonfinite"] = (~jnp.isfinite(loss)).astype(jnp.float32)
    sums = jax.lax.psum(sums, AXIS)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(state.step + 1, params, opt_state), sums


def make_pmapped_step(loss_fn: LossFn, tx: optax.GradientTransformation):
    """The pmapped step: (state, batch, side, frozen, key) -> (state, sums).

    state, side and frozen carry a leading device axis (replicate them once);
    the key is broadcast. The state is donated: its buffers are reused.
    """
    def step(state, batch, side, frozen, key):
        return train_step(state, batch, side, frozen, key, loss_fn=loss_fn, tx=tx)
    return jax.pmap(step, axis_name=AXIS, in_axes=(0, 0, 0, 0, None), donate_argnums=(0,))


def replicate(tree: Any) -> Any:
    """Copies a pytree onto every local device: leading axis = local devices."""
    from rec_jax.data.pipeline import device_sharding
    n = jax.local_device_count()
    sharding = device_sharding()
    return jax.tree.map(
        lambda x: jax.device_put(np.broadcast_to(np.asarray(x), (n,) + np.shape(x)), sharding),
        tree)


def unreplicate(tree: Any) -> Any:
    """The first local device's copy, as host numpy arrays."""
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x[0])), tree)
