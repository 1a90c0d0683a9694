"""Mesh axes and shardings: one place for how arrays are laid over devices.

Two layouts share these helpers:

* pmap (data parallel): a process's batch is ``[local_devices, ...]`` and
  :func:`device_sharding` places it as pmap consumes it;
* mesh mode: all devices form a 2-D ``("data", "model")`` mesh
  (:func:`make_mesh`); arrays whose first dimension is the catalogue size are
  row-sharded over "model" (:func:`partition_spec`), everything else is
  replicated, and batch rows are split over "data" (:func:`batch_sharding`).

Imports nothing of rec_jax, so data, eval and train can all use it.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

BATCH = "batch"  # the pmap axis (data parallel over local devices)
DATA, MODEL = "data", "model"  # the mesh axes


def make_mesh(shape: Sequence[int] | None = None, devices: Sequence[Any] | None = None) -> Mesh:
    """A ("data", "model") mesh over `devices` (default: all).

    Args:
      shape: (data, model) sizes whose product is the device count; one of
        them may be -1 (inferred). None: (all devices, 1), i.e. plain data
        parallelism.
      devices: the devices, e.g. ``jax.devices()[:4]``; default all.
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    shape = tuple(int(s) for s in (shape or (n, 1)))
    if len(shape) != 2:
        raise ValueError(f"mesh shape must be (data, model), got {shape}")
    if shape.count(-1) == 1:
        known = -math.prod(shape)
        if known <= 0 or n % known:
            raise ValueError(f"cannot infer mesh shape {shape} for {n} devices")
        shape = tuple(n // known if s == -1 else s for s in shape)
    if math.prod(shape) != n or min(shape) < 1:
        raise ValueError(f"mesh shape {shape} needs {math.prod(shape)} devices, have {n}")
    try:
        # Topology-aware order on TPU/GPU; a plain reshape elsewhere.
        from jax.experimental import mesh_utils
        grid = mesh_utils.create_device_mesh(shape, devices)
    except Exception:  # noqa: BLE001 - e.g. a device subset mesh_utils cannot lay out
        grid = np.array(devices).reshape(shape)
    return Mesh(grid, (DATA, MODEL), axis_types=(AxisType.Auto, AxisType.Auto))


def partition_spec(shape: Sequence[int], num_items: int, model_size: int) -> P:
    """The sharding rule: rows of catalogue-sized arrays on "model", the rest replicated."""
    if len(shape) >= 1 and shape[0] == num_items and model_size > 1 and num_items % model_size == 0:
        return P(MODEL)
    return P()


def tree_shardings(tree: Any, mesh: Mesh, num_items: int) -> Any:
    """NamedShardings for every leaf of `tree` (params, a TrainState, side tables).

    Works on concrete arrays and on abstract ones (``jax.ShapeDtypeStruct``,
    e.g. from ``jax.eval_shape``), so shardings of a state too big to build
    can be derived before anything is allocated.
    """
    model_size = mesh.shape[MODEL]
    return jax.tree.map(
        lambda x: NamedSharding(mesh, partition_spec(np.shape(x), num_items, model_size)), tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batch rows split over "data" (repeated along "model")."""
    return NamedSharding(mesh, P(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def device_sharding() -> NamedSharding:
    """The sharding of a [local_devices, ...] array that pmap consumes as is."""
    mesh = Mesh(np.array(jax.local_devices()), (BATCH,))
    return NamedSharding(mesh, P(BATCH))
