"""Per-device memory of a big catalogue under mesh mode's row sharding.

The catalogue, not the batch, is what outgrows a device: a 10M-item x 64 MF
table with its Adam moments is 7.7 GB in float32. This measures what one
device holds of it when :mod:`rec_jax.train.mesh` row-shards the item arrays
over 1, 2, 4, 8 devices, and XLA's working set of the compiled step. Nothing
of that size is allocated: shapes are abstract and the step is only
compiled, not run.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m rec_jax.bench.mesh_memory

prints the rows as JSON (the benchmark's ``mesh`` part runs it so, in a
child process, unless the machine has 8 devices).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rec_jax.bench import REPO_ROOT
from rec_jax.sharding import make_mesh, tree_shardings
from rec_jax.train.mesh import make_mesh_step


def _shard_bytes(tree: Any, shardings: Any) -> int:
    """Bytes one device holds of `tree` (abstract or concrete) under `shardings`."""
    total = 0
    for leaf, sharding in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings)):
        shard = sharding.shard_shape(tuple(leaf.shape))
        total += math.prod(shard) * np.dtype(leaf.dtype).itemsize
    return total


def _bpr_mf(num_users: int, num_items: int, dim: int):
    """The ml-style MF student with its BPR loss, as the `mf` recipe trains it."""
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
    from rec_jax.train.step import init_state
    module, loss_fn = _bpr_mf(num_users, num_items, dim)
    tx = optax.adam(1e-3)
    batch = {"user": jax.ShapeDtypeStruct((batch_size,), jnp.int32),
             "item": jax.ShapeDtypeStruct((batch_size,), jnp.int32),
             "negatives": jax.ShapeDtypeStruct((batch_size, 1), jnp.int32)}
    concrete_batch = {k: np.zeros(v.shape, v.dtype) for k, v in batch.items()}

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


def mesh_memory(num_items: int = 10_000_000, dim: int = 64) -> list[dict]:
    """`memory_per_device` at 1-8 devices: here with 8 devices, else in a child
    process with 8 fake CPU devices (JAX's device count is fixed at start-up)."""
    if jax.device_count() >= 8:
        return memory_per_device(num_items, dim)
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO_ROOT, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-m", "rec_jax.bench.mesh_memory", "--num_items",
                           str(num_items), "--dim", str(dim)], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    for r in rows:
        r["where"] = "8 fake CPU devices (compiled, not run)"
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
