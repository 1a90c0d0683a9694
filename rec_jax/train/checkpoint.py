"""Orbax checkpoints of a training run: the state pytree plus JSON loop metadata.

A checkpoint holds everything a resumed run needs to end exactly where an
uninterrupted one ends:

* ``state``: step, params, optimizer state, and the best-so-far params;
* ``meta`` (JSON): early-stopping bookkeeping (best metric and step, evals
  without improvement), the validation history, and whether training ended.

The data position is the step itself (batches are a function of the step),
and randomness is a key folded with the step, so neither needs saving.

Sharded arrays (mesh mode) are saved as they lie: Orbax has every process
write the shards its own devices hold (replicated shards split between their
replicas), in its own ``ocdbt.process_<i>`` folder, and process 0 writes the
metadata; nothing is gathered to one host. Restoring with ``shardings`` reads
each array straight into its target layout, every process reading only its
devices' rows. Host arrays (pmap mode) are saved and restored as numpy.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from rec_jax import errors


class Checkpointer:
    """Keeps the last `keep` checkpoints of one model in `directory`."""

    def __init__(self, directory: str, keep: int = 2):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, cleanup_tmp_directories=True,
            # Synchronous saves: when save() returns the checkpoint is on disk,
            # so a SIGKILL right after loses nothing.
            enable_async_checkpointing=False)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Writes `state` (host arrays, or jax.Arrays laid over several devices) and `meta`.

        Every process of a multi-host run must call it (Orbax synchronises them).
        """
        state = jax.tree.map(_saveable, state)
        if step in self.manager.all_steps():
            # Re-saving a step (e.g. marking the last one done): the previous
            # checkpoint (keep >= 2) still covers a kill in between.
            self.manager.delete(step)
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
        self.manager.wait_until_finished()

    def restore(self, abstract_state: Any, step: int | None = None,
                shardings: Any = None) -> tuple[Any, dict]:
        """Restores `step` (default: latest) into the structure of abstract_state.

        Args:
          abstract_state: a pytree of arrays (or ShapeDtypeStructs).
          shardings: None, or a matching tree of Shardings: each array is read
            directly into its sharding, each process reading only the shards
            its devices hold (however many processes wrote the checkpoint).
            None: a jax.Array leaf comes back placed as it is, a numpy leaf as
            whole host numpy, whatever layout wrote it (a mesh run's
            checkpoint read by a one-device export).
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise errors.MissingInputError(f"no checkpoint in {self.directory}")
        if shardings is None:
            target = jax.tree.map(_host_target, abstract_state)
        else:
            target = jax.tree.map(
                lambda x, s: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s),
                abstract_state, shardings)
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
        state = restored["state"]
        if shardings is None:
            state = jax.tree.map(lambda x, r: np.asarray(r) if isinstance(x, np.ndarray) else r,
                                 abstract_state, state)
        return state, restored["meta"]

    def close(self) -> None:
        self.manager.close()


def _host_target(x):
    """The restore target of a leaf without a sharding given.

    A leaf without a sharding of its own (numpy) is read onto this process's
    first device: left to itself Orbax would reuse the writer's sharding,
    which names devices this process may not have.
    """
    target = ocp.utils.to_shape_dtype_struct(x)
    if isinstance(target, jax.ShapeDtypeStruct) and target.sharding is None:
        target = jax.ShapeDtypeStruct(target.shape, target.dtype,
                                      sharding=jax.sharding.SingleDeviceSharding(
                                          jax.local_devices()[0]))
    return target


def _saveable(x):
    """A leaf as Orbax should write it: a jax.Array laid over several devices as
    is (each process writes its own shards), anything else as host numpy."""
    if isinstance(x, jax.Array) and len(x.sharding.device_set) > 1:
        return x
    return jax.device_get(x)
