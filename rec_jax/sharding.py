"""Mesh axes and shardings: one place for how arrays are laid over devices.

Two layouts share these helpers:

* pmap (data parallel): a process's batch is ``[local_devices, ...]`` and
  :func:`device_sharding` places it as pmap consumes it;
* mesh mode: all devices form a 2-D ``("data", "model")`` mesh
  (:func:`make_mesh`); arrays whose first dimension is the catalogue size are
  row-sharded over "model" (:func:`partition_spec`), everything else is
  replicated, and batch rows are split over "data" (:func:`batch_sharding`).
  With several processes (hosts) the mesh spans all of them; each process
  places only the shards its own devices hold (:func:`place`,
  :func:`process_rows`), without any cross-host transfer.

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


def place(tree: Any, shardings: Any) -> Any:
    """Lays a host pytree out as global arrays with `shardings`, no cross-host traffic.

    Every process passes the same host values (e.g. params initialised from
    the same seed, tables read from the same files) and puts only the slices
    its own devices hold. ``jax.device_put`` would do the same but first
    checks, with an all-gather of every array, that the processes agree;
    for a catalogue-sized table that gather is what mesh mode avoids.

    Args:
      tree: host arrays (numpy, scalars, or single-device jax.Arrays); a leaf
        already laid over several devices is kept (with its target sharding)
        or resharded on device.
      shardings: a tree of Shardings matching `tree`, or one for every leaf.
    """
    if isinstance(shardings, jax.sharding.Sharding):
        shardings = jax.tree.map(lambda _: shardings, tree)

    def put(x, s):
        if isinstance(x, jax.Array) and len(x.sharding.device_set) > 1:
            # Already laid over the devices (e.g. restored into its shardings).
            if x.sharding.is_equivalent_to(s, x.ndim):
                return x
            return jax.device_put(x, s)  # a reshard between global layouts
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, s, lambda index: host[index])

    return jax.tree.map(put, tree, shardings)


def process_rows(sharding: jax.sharding.Sharding, num_rows: int) -> slice:
    """The rows ``[lo, hi)`` of a [num_rows, ...] array that this process's devices hold.

    For a batch split over "data" on a mesh laid out host by host (what
    :func:`make_mesh` builds), a process's devices hold one contiguous block:
    process p of P gets rows ``[p * num_rows / P, (p + 1) * num_rows / P)``
    when the data axis spans the hosts, all rows when it does not (model axis
    across hosts). Raises ValueError when the rows are not contiguous.
    """
    rows = set()
    for index in sharding.addressable_devices_indices_map((num_rows,)).values():
        rows.update(range(num_rows)[index[0]])
    lo, hi = min(rows), max(rows) + 1
    if len(rows) != hi - lo:
        raise ValueError(f"this process's devices hold rows {sorted(rows)[:8]}...: not one "
                         "contiguous block; lay the mesh out host by host (make_mesh)")
    return slice(lo, hi)
