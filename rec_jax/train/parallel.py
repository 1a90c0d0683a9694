"""How a training run is laid over the devices: pmap (default) or a mesh.

``config.parallel`` picks one of two layouts that :func:`rec_jax.train.trainer.fit`
drives through the same calls (restore_shardings, prepare, batches, first,
snapshot, keep, saveable, eval_params, to_host):

* :class:`PmapLayout` (``"pmap"``): the state replicated on every device,
  ``make_pmapped_step``, batches ``[devices, per_device, ...]``; the trainer
  keeps host copies (best params, checkpoints); what the trainer has always
  run, unchanged.
* :class:`MeshLayout` (``"mesh"``): ``jax.jit`` over a ("data", "model")
  mesh (:mod:`rec_jax.train.mesh`), catalogue-sized arrays row-sharded on
  "model", flat global batches split on "data". Everything the trainer
  keeps (state, best params) stays on the mesh: checkpoints are written and
  read shard by shard by every process, and nothing catalogue-sized passes
  through one host until training ends (:meth:`MeshLayout.to_host`).

Both see the same global batch (per-device batch x device count) and the
same per-step keys, so for a loss without randomness (BPR-MF) they end in
the same place up to float rounding.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from rec_jax import console, errors, sharding
from rec_jax.train import mesh as mesh_lib
from rec_jax.train.step import make_pmapped_step, replicate, unreplicate

PARALLEL_MODES = ("pmap", "mesh")


class PmapLayout:
    """Data parallelism with ``jax.pmap``: every device holds the whole model."""

    name = "pmap"
    mesh = None

    def prepare(self, loss_fn, tx, state, side, frozen):
        """(step_fn, state, side, frozen) placed for this layout."""
        return make_pmapped_step(loss_fn, tx), replicate(state), replicate(side), replicate(frozen)

    def batches(self, pipeline, start: int, stop: int):
        return pipeline.device_batches(start, stop)

    def first(self, tree):
        """One device's copy (still on device): what the host reads of replicated values."""
        return jax.tree.map(lambda x: x[0], tree)

    def host(self, tree):
        return unreplicate(tree)

    def restore_shardings(self, tree):
        """Checkpoints restore to the host (then `prepare` replicates them)."""
        del tree
        return None

    def snapshot(self, params_dev):
        """The params the trainer keeps (best so far, evaluated): a host copy."""
        return unreplicate(params_dev)

    def keep(self, params):
        return params  # host params are what this layout keeps

    def saveable(self, state_dev):
        return unreplicate(state_dev)

    def eval_params(self, params, evaluator):
        del evaluator
        return params

    def to_host(self, params):
        return params


class MeshLayout:
    """``jax.jit`` with NamedShardings: item tables row-sharded on "model".

    Args:
      mesh: from :func:`rec_jax.train.mesh.make_mesh`.
      num_items: the catalogue size (arrays with this many rows are sharded).
    """

    name = "mesh"

    def __init__(self, mesh, num_items: int):
        self.mesh, self.num_items = mesh, num_items
        self.multi_process = jax.process_count() > 1

    def shardings(self, tree):
        return sharding.tree_shardings(tree, self.mesh, self.num_items)

    def restore_shardings(self, tree):
        """Checkpoints restore straight into the training layout (rows of
        catalogue-sized arrays on "model"), each process reading its shards."""
        return self.shardings(tree)

    def prepare(self, loss_fn, tx, state, side, frozen):
        """(step_fn, state, side, frozen) on the mesh.

        `state` is host arrays (a fresh run; every process holds the same
        values, initialised from the same seed) or already on the mesh
        (restored into its shardings); side and frozen are host arrays. Each
        process places only its own devices' shards (`sharding.place`).
        """
        shardings = self.shardings(state)
        side_shardings = self.shardings(side)
        frozen_shardings = self.shardings(frozen)
        step = mesh_lib.make_mesh_step(loss_fn, tx, self.mesh, shardings, side_shardings,
                                       frozen_shardings)
        # The step donates its state, so it must own its buffers: host leaves
        # are copied onto the devices here; restored leaves are the restore's
        # own (the best params the trainer keeps are separate copies: `keep`).
        return (step, sharding.place(state, shardings), sharding.place(side, side_shardings),
                sharding.place(frozen, frozen_shardings))

    def batches(self, pipeline, start: int, stop: int):
        return pipeline.mesh_batches(start, stop, sharding.batch_sharding(self.mesh))

    def first(self, tree):
        return tree  # Sums come back replicated: one global value per leaf.

    def host(self, tree):
        """Host numpy of a tree on the mesh, on every process (gathered across hosts)."""
        if self.multi_process:
            from jax.experimental import multihost_utils
            return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))
        return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)

    def snapshot(self, params_dev):
        """The params the trainer keeps: a copy on the mesh, in the training
        shardings (the step donates the state, so its buffers will be reused)."""
        return _copy_on_mesh(params_dev)

    def keep(self, params):
        """Host params (a fresh run's initial params) placed as a snapshot.

        Copied on device after placing: a CPU device_put may share the host
        array's memory, which the (donated) state placed from the same host
        params could share too."""
        return _copy_on_mesh(sharding.place(params, self.shardings(params)))

    def saveable(self, state_dev):
        return state_dev  # Orbax writes each process's shards itself

    def eval_params(self, params, evaluator):
        """The kept params as `evaluator` takes them: on the mesh for a
        mesh-aware evaluator (ShardedEvaluator), else on the host."""
        return params if getattr(evaluator, "ranks_on_mesh", False) else self.host(params)

    def to_host(self, params):
        """What `fit` returns: host numpy, the same on every process. The one
        gather of the (best) params, once, when training ends."""
        return self.host(params)


@jax.jit
def _copy_on_mesh(tree):
    # jnp.copy, not identity: an identity jit would hand back the donated buffers.
    return jax.tree.map(jnp.copy, tree)


def mesh_shape(value: str, num_devices: int, num_items: int) -> tuple[int, int]:
    """(data, model) sizes from ``config.mesh_shape``.

    Args:
      value: "auto", or "D,M" (one of them may be -1: inferred).
      num_devices: all devices of the run.
      num_items: catalogue size; "auto" picks the largest model axis that
        divides both the device count and the catalogue (so the tables really
        shard; ml-100k's 1,682 items give model=2), the rest goes to "data".
    """
    if value == "auto":
        model = max(m for m in range(1, num_devices + 1)
                    if num_devices % m == 0 and num_items % m == 0)
        return num_devices // model, model
    try:
        shape = tuple(int(s) for s in value.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 2:
        raise errors.ConfigError(f"config.mesh_shape={value!r}: use 'auto' or 'D,M' "
                                 "(data, model; one may be -1)")
    if shape.count(-1) == 1:
        known = -math.prod(shape)
        if known > 0 and num_devices % known == 0:
            shape = tuple(num_devices // known if s == -1 else s for s in shape)
    if math.prod(shape) != num_devices or min(shape) < 1:
        raise errors.ConfigError(
            f"config.mesh_shape={value!r} does not lay out {num_devices} devices")
    return shape


def check_config(config) -> None:
    """Refuses unknown ``config.parallel`` / malformed ``config.mesh_shape`` before any work."""
    mode = config.parallel
    if mode not in PARALLEL_MODES:
        raise errors.ConfigError(f"config.parallel={mode!r}: use one of {PARALLEL_MODES}")
    value = config.mesh_shape
    if mode == "mesh" and value != "auto":
        mesh_shape(value, jax.device_count(), 1)


def make_layout(config, name: str, num_items: int, can_mesh: bool = True):
    """The layout a model trains under, from ``config.parallel`` / ``config.mesh_shape``.

    Args:
      name: the model (for messages).
      can_mesh: False for models that mesh mode does not cover (the teacher):
        they fall back to pmap with a logged message rather than failing the
        run, so one config trains a whole pipeline.
    """
    check_config(config)
    if config.parallel == "pmap":
        return PmapLayout()
    if not can_mesh:
        console.say(f"[{name}] config.parallel='mesh' does not cover this model; "
                    "training it with pmap instead")
        return PmapLayout()
    data, model = mesh_shape(config.mesh_shape, jax.device_count(), num_items)
    if model > 1 and num_items % model:
        console.say(f"[{name}] {num_items} items do not split into {model} equal shards: "
                    "item tables stay replicated (pad the catalogue or change config.mesh_shape)")
    console.say(f"[{name}] mesh mode: (data, model) = ({data}, {model}), item rows per device "
                f"{num_items // model if num_items % model == 0 else num_items}")
    return MeshLayout(sharding.make_mesh((data, model)), num_items)
