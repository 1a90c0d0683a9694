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
students (MF, SASRec, DeepFM and their ``_kd`` / ``_fusion`` variants, the
teacher's cached artifacts row-sharded like the other item tables; tested
for ``mf_kd``, ``deepfm_kd`` and ``mf_fusion``; ``_transfer``, an init, takes
the same path untested) with :func:`make_mesh_step` on the mesh given by
``config.mesh_shape``: ``"D,M"`` (one may be -1) or ``"auto"``, the largest
model axis dividing both the device count and the catalogue (ml-100k on 4
devices: (2, 2)). The global batch is still ``batch_size_per_device`` x
devices. Validation and test ranking of MF and SASRec run on the row-sharded
table (:class:`rec_jax.eval.sharded.ShardedEvaluator`); DeepFM, whose score
is an MLP, is ranked by the dense evaluator on host params (a printed note
says so). The teacher (item vectors from BERT) is not covered: it trains
with pmap and a logged message, so one config still runs the whole
pipeline. Layouts: :mod:`rec_jax.train.parallel`.

**Several hosts.** The mesh spans every process's devices (``make_mesh``
lays them out host by host: with (data, model) = (2, 2) on 2 hosts x 2
devices, "data" runs across the hosts and each host holds both row blocks
of the tables). Then

* each process feeds its own devices' rows of the global batch
  (``TrainPipeline.mesh_batches``), the same global batch one process feeds;
* state, side tables and best params are placed shard by shard
  (``rec_jax.sharding.place``) and stay on the mesh: checkpoints are written
  by every process, each its own shards (replicated shards split between
  their replicas), and restored straight into the training shardings
  (``rec_jax.train.checkpoint``); nothing is gathered to host 0;
* every process computes the same validation metrics (the merged top K is
  replicated; checked across processes), so all take the same
  early-stopping decision; process 0 writes logs, results and recs;
* the best params are gathered to every host once, when training ends (what
  ``fit`` returns: host numpy for the final evaluation, export and warm
  starts).

A table whose row count the "model" axis does not divide stays replicated
(``jax.Array`` shards must be equal); pad the catalogue to a multiple of the
model axis to shard it.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import optax
from jax.sharding import Mesh

from rec_jax.sharding import batch_sharding, replicated
from rec_jax.train.step import LossFn, global_train_step


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

