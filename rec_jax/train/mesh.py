"""Mesh mode: the same train step under ``jax.jit`` with item tables row-sharded.

In recommendation the catalogue, not the batch, is what outgrows a device: a
10M-item x 64 table with its Adam moments is 7.7 GB in float32. Mesh mode
lays all devices out as a 2-D ``("data", "model")`` mesh and

* row-shards every array whose first dimension is the catalogue size
  (``item_embed/embedding`` [I, d], ``item_bias`` [I], their optimizer
  moments, item side tables) over "model": device m holds rows
  ``[m * I / M, (m + 1) * I / M)``;
* replicates everything else (user tables of a moderate size, MLPs, scalars);
* splits the batch over "data" (and repeats it along "model").

The step is :func:`rec_jax.train.step.global_train_step`, the pmapped step's
own core without its collectives: under jit the loss's means and sums are
over the global batch already and XLA inserts the cross-device reductions
(and turns a gather from a row-sharded table into local gathers + a sum).
The step's randomness is folded with shard 0 instead of the device index
(see ``global_train_step``): identical to the pmapped step for losses that
draw no random numbers (BPR-MF), equal in distribution otherwise.

Example::

    mesh = make_mesh((2, 4))                            # 8 devices
    state = init_state(params, tx)
    shardings = tree_shardings(state, mesh, num_items)
    state = jax.device_put(state, shardings)
    step = make_mesh_step(loss_fn, tx, mesh, shardings,
                          side_shardings=tree_shardings(side, mesh, num_items))
    for batch in pipeline.mesh_batches(0, steps, batch_sharding(mesh)):
        state, sums = step(state, batch, side, frozen, key)

**In the trainer.** ``--config.parallel=mesh`` (default ``"pmap"``, which
runs exactly what it always ran) makes ``python -m rec_jax.main`` train the
students (MF, SASRec, DeepFM; their ``_kd`` / ``_transfer`` / ``_fusion``
variants take the same path but are not yet tested in mesh mode) with
:func:`make_mesh_step` on the mesh given by
``config.mesh_shape``: ``"D,M"`` (one may be -1) or ``"auto"``, the largest
model axis dividing both the device count and the catalogue (ml-100k on 4
devices: (2, 2)). The global batch is still ``batch_size_per_device`` x
devices. Checkpoints are the usual Orbax ones, gathered to the host on save
and placed back on the mesh on resume (so single-host only for now).
Validation and test ranking of MF and SASRec run on the row-sharded table
(:class:`rec_jax.eval.sharded.ShardedEvaluator`); DeepFM, whose score is an
MLP, is ranked by the dense evaluator (a printed note says so). The teacher
(item vectors from BERT) is not covered: it trains with pmap and a logged
message, so one config still runs the whole pipeline. Layouts:
:mod:`rec_jax.train.parallel`.

A table whose row count the "model" axis does not divide stays replicated
(``jax.Array`` shards must be equal); pad the catalogue to a multiple of the
model axis to shard it.

``python -m rec_jax.train.mesh`` prints the per-device memory of a 10M-item
x 64 MF with Adam at 1, 2, 4, 8 devices (set
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` on a CPU); nothing of
that size is allocated: shapes are abstract and only compiled, not run.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from rec_jax.train.step import LossFn, global_train_step

DATA, MODEL = "data", "model"


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


def make_mesh_step(loss_fn: LossFn, tx: optax.GradientTransformation, mesh: Mesh,
                   state_shardings: Any, side_shardings: Any = None,
                   frozen_shardings: Any = None):
    """The mesh-mode step: (state, batch, side, frozen, key) -> (state, sums).

    Args:
      loss_fn, tx: as for ``make_pmapped_step`` (the same pure step runs).
      mesh: from :func:`make_mesh`.
      state_shardings: :func:`tree_shardings` of the TrainState.
      side_shardings, frozen_shardings: shardings of side / frozen (a tree or
        one sharding for all leaves); default replicated.

    Returns:
      A jitted function. `batch` is the flat global batch ``[global_batch,
      ...]`` (``TrainPipeline.mesh_batches``); `sums` come back replicated,
      summed over the global batch. The state is donated.
    """
    rep = replicated(mesh)
    step = functools.partial(global_train_step, loss_fn=loss_fn, tx=tx)
    return jax.jit(step,
                   in_shardings=(state_shardings, batch_sharding(mesh),
                                 rep if side_shardings is None else side_shardings,
                                 rep if frozen_shardings is None else frozen_shardings, rep),
                   out_shardings=(state_shardings, rep), donate_argnums=(0,))


# ---------------------------------------------------------------------------
# Memory per device for a big catalogue.
# ---------------------------------------------------------------------------


def _shard_bytes(tree: Any, shardings: Any) -> int:
    """Bytes one device holds of `tree` (abstract or concrete) under `shardings`."""
    total = 0
    for leaf, sharding in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings)):
        shard = sharding.shard_shape(tuple(leaf.shape))
        total += math.prod(shard) * np.dtype(leaf.dtype).itemsize
    return total


def _bpr_mf(num_users: int, num_items: int, dim: int):
    """The ml-style MF student with its BPR loss, as registry's `mf` trains it."""
    from rec_jax.distill import objectives
    from rec_jax.models import students
    module = students.MF(num_users, num_items, dim)

    def loss_fn(params, batch, side, frozen, rng):
        del frozen, rng
        out = module.apply({"params": params}, batch, side)
        loss = objectives.bpr_loss(out["score"], out["neg_score"])
        n = jnp.asarray(batch["user"].shape[0], jnp.float32)
        return loss, {"loss": loss * n, "examples": n}
    return module, loss_fn


def memory_per_device(num_items: int = 10_000_000, dim: int = 64, num_users: int = 100_000,
                      device_counts: Sequence[int] = (1, 2, 4, 8), batch_size: int = 8192,
                      compile_step: bool = True) -> list[dict]:
    """Per-device memory of an MF (item table [I, d] + bias, user table) with Adam.

    For each device count n, a (1, n) mesh row-shards the item arrays n ways
    (the user table is replicated). Nothing of full size is allocated: the
    state is abstract (``jax.eval_shape``) and the step is only lowered and
    compiled.

    Returns:
      One dict per n: ``state_bytes`` (params + Adam moments one device
      holds, from the shard shapes), ``item_rows_per_device``, and, when
      `compile_step`, XLA's ``memory_analysis()`` of the compiled step:
      ``argument_bytes``, ``output_bytes``, ``alias_bytes``, ``temp_bytes``
      and ``peak_bytes`` (arguments + outputs - aliased + temporaries, the
      step's working set per device).
    """
    module, loss_fn = _bpr_mf(num_users, num_items, dim)
    tx = optax.adam(1e-3)
    batch = {"user": jax.ShapeDtypeStruct((batch_size,), jnp.int32),
             "item": jax.ShapeDtypeStruct((batch_size,), jnp.int32),
             "negatives": jax.ShapeDtypeStruct((batch_size, 1), jnp.int32)}
    concrete_batch = {k: np.zeros(v.shape, v.dtype) for k, v in batch.items()}
    from rec_jax.train.step import init_state

    def make_state(rng):
        params = module.init(rng, concrete_batch, {})["params"]
        return init_state(params, tx)
    state = jax.eval_shape(make_state, jax.random.PRNGKey(0))
    rows = []
    for n in device_counts:
        if n > jax.device_count():
            rows.append({"devices": n, "skipped": f"only {jax.device_count()} devices"})
            continue
        mesh = make_mesh((1, n), jax.devices()[:n])
        shardings = tree_shardings(state, mesh, num_items)
        row = {"devices": n, "num_items": num_items, "dim": dim, "num_users": num_users,
               "item_rows_per_device": num_items // n if num_items % n == 0 else num_items,
               "state_bytes": _shard_bytes(state, shardings)}
        if compile_step:
            step = make_mesh_step(loss_fn, tx, mesh, shardings)
            key = jax.ShapeDtypeStruct((2,), jnp.uint32)
            compiled = step.lower(state, batch, {}, None, key).compile()
            mem = compiled.memory_analysis()
            if mem is not None:
                row.update(argument_bytes=int(mem.argument_size_in_bytes),
                           output_bytes=int(mem.output_size_in_bytes),
                           alias_bytes=int(mem.alias_size_in_bytes),
                           temp_bytes=int(mem.temp_size_in_bytes))
                row["peak_bytes"] = (row["argument_bytes"] + row["output_bytes"]
                                     - row["alias_bytes"] + row["temp_bytes"])
        rows.append(row)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description="Per-device memory of a row-sharded MF")
    parser.add_argument("--num_items", type=int, default=10_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--num_users", type=int, default=100_000)
    parser.add_argument("--devices", default="1,2,4,8")
    parser.add_argument("--no_compile", action="store_true")
    args = parser.parse_args(argv)
    rows = memory_per_device(args.num_items, args.dim, args.num_users,
                             [int(x) for x in args.devices.split(",")],
                             compile_step=not args.no_compile)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
