"""Orbax checkpoints of a training run: the state pytree plus JSON loop metadata.

A checkpoint holds everything a resumed run needs to end exactly where an
uninterrupted one ends:

* ``state``: step, params, optimizer state, and the best-so-far params;
* ``meta`` (JSON): early-stopping bookkeeping (best metric and step, evals
  without improvement), the validation history, and whether training ended.

The data position is the step itself (batches are a function of the step),
and randomness is a key folded with the step, so neither needs saving.
"""

from __future__ import annotations

import os
from typing import Any

import jax
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
        state = jax.device_get(state)
        if step in self.manager.all_steps():
            # Re-saving a step (e.g. marking the last one done): the previous
            # checkpoint (keep >= 2) still covers a kill in between.
            self.manager.delete(step)
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
        self.manager.wait_until_finished()

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restores `step` (default: latest) into the structure of abstract_state."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise errors.MissingInputError(f"no checkpoint in {self.directory}")
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
        return restored["state"], restored["meta"]

    def close(self) -> None:
        self.manager.close()
