"""How a training run is laid over the devices: pmap (default) or a mesh.

``config.parallel`` picks one of two layouts that :func:`rec_jax.train.trainer.fit`
drives through the same five calls (prepare, batches, first, host):

* :class:`PmapLayout` (``"pmap"``): the state replicated on every device,
  ``make_pmapped_step``, batches ``[devices, per_device, ...]``; what the
  trainer has always run, unchanged.
* :class:`MeshLayout` (``"mesh"``): ``jax.jit`` over a ("data", "model")
  mesh (:mod:`rec_jax.train.mesh`), catalogue-sized arrays row-sharded on
  "model", flat global batches split on "data".

Both see the same global batch (per-device batch x device count) and the
same per-step keys, so for a loss without randomness (BPR-MF) they end in
the same place up to float rounding.
"""

from __future__ import annotations

import math

import jax
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


class MeshLayout:
    """``jax.jit`` with NamedShardings: item tables row-sharded on "model".

    Args:
      mesh: from :func:`rec_jax.train.mesh.make_mesh`.
      num_items: the catalogue size (arrays with this many rows are sharded).
    """

    name = "mesh"

    def __init__(self, mesh, num_items: int):
        self.mesh, self.num_items = mesh, num_items

    def prepare(self, loss_fn, tx, state, side, frozen):
        shardings = sharding.tree_shardings(state, self.mesh, self.num_items)
        side_shardings = sharding.tree_shardings(side, self.mesh, self.num_items)
        frozen_shardings = sharding.tree_shardings(frozen, self.mesh, self.num_items)
        step = mesh_lib.make_mesh_step(loss_fn, tx, self.mesh, shardings, side_shardings,
                                       frozen_shardings)
        # The step donates its state: place a host copy, so the donated buffers
        # never alias the caller's arrays (the initial params are also the
        # first best params, saved later).
        state = jax.device_get(state)
        return (step, jax.device_put(state, shardings), jax.device_put(side, side_shardings),
                jax.device_put(frozen, frozen_shardings))

    def batches(self, pipeline, start: int, stop: int):
        return pipeline.mesh_batches(start, stop, sharding.batch_sharding(self.mesh))

    def first(self, tree):
        return tree  # Sums come back replicated: one global value per leaf.

    def host(self, tree):
        return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


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
