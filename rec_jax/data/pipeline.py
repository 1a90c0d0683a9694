"""Training input pipeline: deterministic, sharded per process, prefetched.

Batches are a pure function of (seed, step):

* the epoch's example order is a permutation drawn from (seed, epoch), so a
  resumed run sees exactly the batches an uninterrupted run would;
* random parts of a batch (negative items) are drawn from (seed, step) for
  the whole *global* batch, and each process keeps its slice, so 2 processes
  with 2 devices each see the same examples and negatives as 1 process with 4
  devices;
* a process's slice is shaped ``[local_devices, per_device_batch, ...]`` for
  ``jax.pmap``; ``steps_per_call=k`` stacks k consecutive steps as
  ``[local_devices, k, per_device_batch, ...]`` for the multi-step pmap;
* mesh mode (``mesh_batches``) places the flat global batch
  ``[global_batch, ...]`` sharded on the mesh's "data" axis.

Two interchangeable engines produce the same batches: ``tf`` (tf.data:
parallel map and prefetch) and ``numpy`` (a background thread), the latter for
machines without TensorFlow. Both end in a small device-prefetch queue.
"""

from __future__ import annotations

import collections
import queue
import threading
from typing import Iterator, Protocol

import jax
import numpy as np

from rec_jax.data.interactions import SplitData, contains

Batch = dict[str, np.ndarray]


class ExampleSource(Protocol):
    """What a model trains on: a count of examples and a batch builder."""

    num_examples: int

    def make_batch(self, example_ids: np.ndarray, rng: np.random.Generator) -> Batch:
        """Builds the batch of the given example ids; randomness only from rng."""


# ---------------------------------------------------------------------------
# Negative sampling.
# ---------------------------------------------------------------------------


class NegativeSampler:
    """Draws items a user has not interacted with in training.

    Negatives that happen to be training positives are redrawn (a few vectorised
    rounds); DESIGN §8 measured that sampling from all items instead loses
    several NDCG points on ml-100k.

    Membership is looked up in a bitmap of the users x items training matrix
    (one bit per pair: 200 KB for ml-100k, 93 MB for 10M ratings) when it
    fits in `max_bitmap_bytes`, else by binary search in the sorted pair keys;
    both give the same answers, so the draws (and batches) are the same
    either way. The bitmap makes a 2,048-example MF batch about 4x cheaper
    to build, which matters when the step itself takes under a millisecond.

    Args:
      data: the split (train pairs are the positives to avoid).
      kind: "uniform" over items, or "popularity": proportional to
        (training count + 1) ** power.
      power: exponent for popularity sampling.
      max_bitmap_bytes: memory cap of the bitmap (0: always binary search).
    """

    def __init__(self, data: SplitData, kind: str = "uniform", power: float = 1.0,
                 max_rounds: int = 50, max_bitmap_bytes: int = 512 << 20):
        if kind not in ("uniform", "popularity"):
            raise ValueError(f"unknown negative sampling {kind!r}: use 'uniform' or 'popularity'")
        self.num_items = data.num_items
        self.keys = data.train_keys
        self.max_rounds = max_rounds
        self.cdf = None
        if kind == "popularity":
            p = (data.item_popularity.astype(np.float64) + 1.0) ** power
            self.cdf = np.cumsum(p / p.sum())
        self.bitmap = None
        num_bytes = (data.num_users * data.num_items + 7) // 8
        if num_bytes <= max_bitmap_bytes:
            self.bitmap = np.zeros(num_bytes, np.uint8)
            keys = self.keys.astype(np.int64)
            np.bitwise_or.at(self.bitmap, keys >> 3,
                             np.left_shift(1, keys & 7).astype(np.uint8))

    def _draw(self, rng, shape):
        if self.cdf is None:
            return rng.integers(0, self.num_items, shape, dtype=np.int64)
        return np.minimum(np.searchsorted(self.cdf, rng.random(shape)), self.num_items - 1)

    def is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Whether each (user, item) pair is a training interaction."""
        if self.bitmap is None:
            return contains(self.keys, self.num_items, users, items)
        keys = users.astype(np.int64) * self.num_items + items
        return ((self.bitmap[keys >> 3] >> (keys & 7).astype(np.uint8)) & 1).astype(np.bool_)

    def sample(self, users: np.ndarray, num: int, rng: np.random.Generator) -> np.ndarray:
        """Returns [len(users), num] int32 negatives."""
        users = np.repeat(users.astype(np.int64), num)
        items = self._draw(rng, users.shape)
        bad = self.is_positive(users, items)
        for _ in range(self.max_rounds):
            if not bad.any():
                break
            items[bad] = self._draw(rng, int(bad.sum()))
            bad[bad] = self.is_positive(users[bad], items[bad])
        return items.reshape(-1, num).astype(np.int32)


# ---------------------------------------------------------------------------
# Example sources.
# ---------------------------------------------------------------------------


class PairSource:
    """(user, positive item, negative items) triples over training rows (BPR)."""

    def __init__(self, data: SplitData, sampler: NegativeSampler, num_negatives: int = 1):
        rows = data.split.train
        self.users = data.dataset.user[rows].astype(np.int32)
        self.items = data.dataset.item[rows].astype(np.int32)
        self.sampler, self.num_negatives = sampler, num_negatives
        self.num_examples = len(rows)

    def make_batch(self, example_ids, rng):
        users = self.users[example_ids]
        return {"user": users, "item": self.items[example_ids],
                "negatives": self.sampler.sample(users, self.num_negatives, rng)}


class _UserSource:
    """One example per user with at least two training items; batches of
    [B, max_len] item arrays padded with -1 (and ratings padded with 0)."""

    def __init__(self, data: SplitData, max_len: int):
        self.user_ids = np.flatnonzero(data.train.lengths() >= 2).astype(np.int32)
        self.data, self.max_len = data, max_len
        self.num_examples = len(self.user_ids)

    def _empty(self, num_users: int):
        """(inputs, targets, ratings) for num_users users, all padding."""
        shape = (num_users, self.max_len)
        return np.full(shape, -1, np.int32), np.full(shape, -1, np.int32), np.zeros(shape,
                                                                                       np.float32)


class SequenceSource(_UserSource):
    """Per-user item sequences for next-item models (SASRec).

    Each example is one user: the last ``max_len + 1`` training items in time
    order give inputs ``seq[:-1]`` and targets ``seq[1:]``, left-padded with -1
    (a padded target is ignored by the loss); ``target_ratings`` carries each
    target's rating (for CTR heads), 0 where padded.
    """

    def __init__(self, data: SplitData, max_len: int, sampler: NegativeSampler | None = None,
                 num_negatives: int = 0):
        super().__init__(data, max_len)
        self.sampler, self.num_negatives = sampler, num_negatives

    def make_batch(self, example_ids, rng):
        users = self.user_ids[example_ids]
        inputs, targets, ratings = self._empty(len(users))
        train = self.data.train
        for k, u in enumerate(users):
            seq = train.row(u)[-(self.max_len + 1):]
            n = len(seq) - 1
            inputs[k, self.max_len - n:] = seq[:-1]
            targets[k, self.max_len - n:] = seq[1:]
            ratings[k, self.max_len - n:] = train.row_values(u)[-n:]
        batch = {"user": users, "inputs": inputs, "targets": targets, "target_ratings": ratings}
        if self.num_negatives:
            batch["negatives"] = self.sampler.sample(users, self.num_negatives, rng)
        return batch


class ProfileSource(_UserSource):
    """Per-user bags with held-out items, for whole-profile user towers.

    Each example is one user with at least two training items. Every step
    draws a fresh random split of (up to ``max_len`` of) the user's training
    items: each is held out with probability ``holdout`` (at least one is,
    and at least one stays visible). ``inputs`` holds the visible items and
    ``targets`` the held-out ones (``targets="heldout"``: the model learns to
    predict what was hidden from it, the task a random-holdout split such as
    ``ratio`` evaluates) or the whole bag (``targets="all"``: a denoising
    auto-encoder, as Mult-DAE), each left-aligned and padded with -1;
    ``target_ratings`` carries the targets' ratings (0 where padded).
    """

    def __init__(self, data: SplitData, max_len: int, holdout: float = 0.2,
                 targets: str = "heldout"):
        if not 0.0 < holdout < 1.0:
            raise ValueError(f"holdout (config.teacher.profile_holdout) must be in (0, 1), "
                             f"got {holdout}")
        if targets not in ("heldout", "all"):
            raise ValueError(f"targets={targets!r} (config.teacher.profile_targets): use "
                             "'heldout' or 'all'")
        super().__init__(data, max_len)
        self.holdout, self.all_targets = holdout, targets == "all"

    def make_batch(self, example_ids, rng):
        users = self.user_ids[example_ids]
        inputs, targets, ratings = self._empty(len(users))
        train = self.data.train
        for k, u in enumerate(users):
            items, values = train.row(u), train.row_values(u)
            order = rng.permutation(len(items))[:self.max_len]
            held = rng.random(len(order)) < self.holdout
            if held.all() or not held.any():
                held[:] = False
                held[rng.integers(len(order))] = True
            hidden, shown = order[held], order[~held]
            if self.all_targets:
                hidden = order
            inputs[k, :len(shown)] = items[shown]
            targets[k, :len(hidden)] = items[hidden]
            ratings[k, :len(hidden)] = values[hidden]
        return {"user": users, "inputs": inputs, "targets": targets, "target_ratings": ratings}


class CTRSource:
    """Labelled (user, item) pairs for CTR models.

    Every training rating is an example with label rating >= threshold; each
    also brings ``num_negatives`` unobserved items with label 0, so that the
    model learns to rank unseen items low and can be used for full ranking.
    """

    def __init__(self, data: SplitData, sampler: NegativeSampler, threshold: float = 4.0,
                 num_negatives: int = 1):
        rows = data.split.train
        self.users = data.dataset.user[rows].astype(np.int32)
        self.items = data.dataset.item[rows].astype(np.int32)
        self.labels = (data.dataset.rating[rows] >= threshold).astype(np.float32)
        self.sampler, self.num_negatives = sampler, num_negatives
        self.num_examples = len(rows)

    def make_batch(self, example_ids, rng):
        users = self.users[example_ids]
        return {"user": users, "item": self.items[example_ids],
                "label": self.labels[example_ids],
                "negatives": self.sampler.sample(users, self.num_negatives, rng),
                # Position in split.train, where per-pair teacher outputs are kept.
                "row": example_ids.astype(np.int32)}


# ---------------------------------------------------------------------------
# The pipeline.
# ---------------------------------------------------------------------------


class TrainPipeline:
    """Deterministic batches for global steps, sliced for this process.

    Args:
      source: the example source.
      per_device_batch: examples per device per step.
      seed: data seed.
      engine: "tf", "numpy" or "auto" (tf when TensorFlow imports).
      prefetch: batches kept ready on the host and on device.
    """

    def __init__(self, source: ExampleSource, per_device_batch: int, seed: int,
                 engine: str = "auto", prefetch: int = 2):
        self.source = source
        self.seed = seed
        self.per_device_batch = per_device_batch
        self.local_devices = jax.local_device_count()
        self.global_batch = per_device_batch * jax.device_count()
        self.process_index, self.process_count = jax.process_index(), jax.process_count()
        self.steps_per_epoch = source.num_examples // self.global_batch
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"global batch {self.global_batch} (per-device {per_device_batch} x "
                f"{jax.device_count()} devices) exceeds the {source.num_examples} training "
                "examples; lower the batch size")
        self.engine = _resolve_engine(engine)
        self.prefetch = prefetch
        self._perm_cache: tuple[int, np.ndarray] | None = None

    def epoch_order(self, epoch: int) -> np.ndarray:
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._perm_cache = (epoch, rng.permutation(self.source.num_examples))
        return self._perm_cache[1]

    def global_batch_ids(self, step: int) -> np.ndarray:
        epoch, b = divmod(step, self.steps_per_epoch)
        # The tail of each epoch that does not fill a global batch is dropped;
        # a fresh permutation next epoch gives those examples their turn.
        return self.epoch_order(epoch)[b * self.global_batch:(b + 1) * self.global_batch]

    def global_host_batch(self, step: int) -> Batch:
        """The whole global batch of step `step`, flat: [global_batch, ...]."""
        # The whole global batch is built on every process with the same RNG,
        # so the draws do not depend on the process layout; it is small.
        return self.source.make_batch(self.global_batch_ids(step),
                                      np.random.default_rng([self.seed, 1, step]))

    def host_batch(self, step: int) -> Batch:
        """This process's part of global step `step`: [local_devices, per_device, ...]."""
        batch = self.global_host_batch(step)
        local = self.per_device_batch * self.local_devices
        lo = self.process_index * local
        return {k: v[lo:lo + local].reshape((self.local_devices, self.per_device_batch)
                                            + v.shape[1:]) for k, v in batch.items()}

    def host_batches(self, start: int, stop: int, steps_per_call: int = 1,
                     align: tuple[int, ...] = ()) -> Iterator[Batch]:
        """Host batches for steps [start, stop); with steps_per_call=k, up to k
        steps stacked on axis 1 per item (see `chunk_lengths` for the sizes)."""
        lengths = chunk_lengths(start, stop, steps_per_call, align)
        if self.engine == "tf":
            return _stack_steps(_tf_batches(self, start, stop), lengths, steps_per_call)
        return _threaded(lambda: _stack_steps((self.host_batch(s) for s in range(start, stop)),
                                              lengths, steps_per_call), self.prefetch)

    def device_batches(self, start: int, stop: int, steps_per_call: int = 1,
                       align: tuple[int, ...] = ()) -> Iterator[Batch]:
        """Batches for steps [start, stop), already placed on the local devices.

        steps_per_call=k yields ``[local_devices, n, per_device, ...]`` stacks
        (n <= k) for ``make_pmapped_multi_step``: a chunk also ends at every
        multiple of a value in `align` (log / eval / checkpoint intervals) and
        at `stop`, so a loop that acts at those steps sees them as chunk ends.
        """
        return prefetch_to_devices(self.host_batches(start, stop, steps_per_call, align),
                                   self.prefetch)

    def mesh_batches(self, start: int, stop: int, sharding) -> Iterator[Batch]:
        """Global batches for mesh mode: flat [global_batch, ...] arrays with `sharding`.

        Every process builds the whole global batch (as for pmap), so each
        device's rows are cut from it whatever the mesh layout across hosts.

        Args:
          sharding: the batch sharding, e.g. ``rec_jax.train.mesh.batch_sharding(mesh)``
            (rows split on "data", repeated along "model").
        """
        def place(batch):
            return {k: jax.make_array_from_callback(v.shape, sharding, lambda idx, v=v: v[idx])
                    for k, v in batch.items()}

        host = _threaded(lambda: (self.global_host_batch(s) for s in range(start, stop)),
                         self.prefetch)
        buffer: collections.deque = collections.deque()
        for batch in host:
            buffer.append(place(batch))
            if len(buffer) > self.prefetch:
                yield buffer.popleft()
        while buffer:
            yield buffer.popleft()


def _resolve_engine(engine: str) -> str:
    if engine not in ("auto", "tf", "numpy"):
        raise ValueError(f"unknown input engine {engine!r}: use 'auto', 'tf' or 'numpy'")
    if engine == "auto":
        try:
            import tensorflow  # noqa: F401
            return "tf"
        except ImportError:
            return "numpy"
    return engine


def _tf_batches(pipe: TrainPipeline, start: int, stop: int) -> Iterator[Batch]:
    import tensorflow as tf
    example = pipe.host_batch(start)
    keys = sorted(example)

    def build(step):
        batch = pipe.host_batch(int(step))
        return [batch[k] for k in keys]

    def to_tensors(step):
        flat = tf.numpy_function(build, [step], [tf.as_dtype(example[k].dtype) for k in keys],
                                 stateful=False)
        return {k: tf.ensure_shape(t, example[k].shape) for k, t in zip(keys, flat)}

    ds = tf.data.Dataset.range(start, stop)
    # deterministic=True keeps step order even with parallel map workers.
    ds = ds.map(to_tensors, num_parallel_calls=2, deterministic=True).prefetch(pipe.prefetch)
    options = tf.data.Options()
    options.threading.private_threadpool_size = 2
    ds = ds.with_options(options)
    return ds.as_numpy_iterator()


def chunk_lengths(start: int, stop: int, steps_per_call: int,
                  align: tuple[int, ...] = ()) -> list[int]:
    """Step counts of the chunks [start, stop) is cut into for a multi-step call.

    Each chunk has at most `steps_per_call` steps and ends at `stop` and at
    every multiple of a value in `align`: a run resumed at step 437 with
    steps_per_call=8 and align=(50,) gets chunks of 8 and 5 (ending at 450),
    then 8, 8, ... with a short one ending at 500, and so on.

    Example: chunk_lengths(0, 10, 4) == [4, 4, 2];
    chunk_lengths(3, 12, 4, align=(5,)) == [2, 4, 1, 2].
    """
    if steps_per_call < 1:
        raise ValueError(f"steps_per_call must be >= 1, got {steps_per_call}")
    align = tuple(a for a in align if a and a > 0)
    lengths, step = [], start
    while step < stop:
        end = min(stop, step + steps_per_call)
        for a in align:
            end = min(end, (step // a + 1) * a)
        lengths.append(end - step)
        step = end
    return lengths


def _stack_steps(batches: Iterator[Batch], lengths: list[int],
                 steps_per_call: int) -> Iterator[Batch]:
    """Groups [devices, per_device, ...] batches into [devices, n, per_device, ...] chunks."""
    if steps_per_call == 1:
        yield from batches
        return
    batches = iter(batches)
    for n in lengths:
        group = [next(batches) for _ in range(n)]
        yield {k: np.stack([b[k] for b in group], axis=1) for k in group[0]}


def _threaded(make_iter, size: int) -> Iterator:
    """Runs an iterator in a background thread with a bounded queue."""
    q: queue.Queue = queue.Queue(maxsize=max(1, size))
    done = object()

    def work():
        try:
            for item in make_iter():
                q.put(item)
            q.put(done)
        except BaseException as e:  # Surface producer errors in the consumer.
            q.put(e)

    threading.Thread(target=work, daemon=True).start()
    while True:
        item = q.get()
        if item is done:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def device_sharding():
    """The sharding of a [local_devices, ...] array that pmap consumes as is."""
    mesh = jax.sharding.Mesh(np.array(jax.local_devices()), ("batch",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))


def prefetch_to_devices(batches: Iterator[Batch], size: int = 2) -> Iterator[Batch]:
    """Keeps `size` batches in flight to the local devices."""
    sharding = device_sharding()
    buffer: collections.deque = collections.deque()

    def put(batch):
        return jax.tree.map(lambda x: jax.device_put(x, sharding), batch)

    for batch in batches:
        buffer.append(put(batch))
        if len(buffer) > size:
            yield buffer.popleft()
    while buffer:
        yield buffer.popleft()
