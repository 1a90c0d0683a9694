"""TrainPipeline: deterministic, resumable, sharded batches; negative sampling."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from conftest import NUM_FAKE_DEVICES
from rec_jax.data.pipeline import TrainPipeline
from rec_jax.data.sources import NegativeSampler, PairSource

PER_DEVICE = 64
NUM_NEG = 3


@pytest.fixture(scope="module")
def source(ml100k_ratio):
    return PairSource(ml100k_ratio, NegativeSampler(ml100k_ratio), num_negatives=NUM_NEG)


def _pipe(source, seed=0, engine="numpy"):
    return TrainPipeline(source, PER_DEVICE, seed, engine=engine)


def _assert_same(batches_a, batches_b):
    assert len(batches_a) == len(batches_b)
    for a, b in zip(batches_a, batches_b):
        assert sorted(a) == sorted(b)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_fake_devices_are_visible():
    assert jax.device_count() == NUM_FAKE_DEVICES == jax.local_device_count()


def test_batches_are_a_function_of_seed_and_step(source):
    pipe = _pipe(source)
    assert pipe.global_batch == PER_DEVICE * NUM_FAKE_DEVICES
    assert pipe.steps_per_epoch == source.num_examples // pipe.global_batch
    epoch_end = pipe.steps_per_epoch
    first = list(pipe.host_batches(epoch_end - 6, epoch_end + 4))  # crosses an epoch boundary
    batch = first[0]
    assert batch["user"].shape == (NUM_FAKE_DEVICES, PER_DEVICE)
    assert batch["item"].shape == (NUM_FAKE_DEVICES, PER_DEVICE)
    assert batch["negatives"].shape == (NUM_FAKE_DEVICES, PER_DEVICE, NUM_NEG)
    # Resume: a fresh pipeline started mid-epoch yields exactly the same batches.
    resumed = list(_pipe(source).host_batches(epoch_end - 3, epoch_end + 4))
    _assert_same(first[3:], resumed)
    _assert_same([first[5]], [_pipe(source).host_batch(epoch_end - 1)])
    # Another seed gives other batches.
    other = _pipe(source, seed=1).host_batch(epoch_end - 6)
    assert not np.array_equal(other["user"], batch["user"])
    # Consecutive epochs use different orders.
    assert not np.array_equal(pipe.global_batch_ids(0), pipe.global_batch_ids(epoch_end))


def test_an_epoch_visits_each_example_at_most_once(source):
    pipe = _pipe(source)
    ids = np.concatenate([pipe.global_batch_ids(s) for s in range(pipe.steps_per_epoch)])
    assert len(ids) == pipe.steps_per_epoch * pipe.global_batch
    assert len(np.unique(ids)) == len(ids)
    # Batches carry the examples' own (user, item) pairs.
    batch = source.make_batch(ids[:10], np.random.default_rng(0))
    np.testing.assert_array_equal(batch["user"], source.users[ids[:10]])
    np.testing.assert_array_equal(batch["item"], source.items[ids[:10]])


def test_tf_and_numpy_engines_give_identical_batches(source):
    numpy_batches = list(_pipe(source, engine="numpy").host_batches(3, 9))
    tf_batches = list(_pipe(source, engine="tf").host_batches(3, 9))
    _assert_same(numpy_batches, tf_batches)


def test_device_batches_are_sharded_over_local_devices(source):
    pipe = _pipe(source)
    host = pipe.host_batch(2)
    (on_device,) = list(pipe.device_batches(2, 3))
    for k, x in on_device.items():
        assert isinstance(x, jax.Array)
        assert len(x.sharding.device_set) == NUM_FAKE_DEVICES
        shards = x.addressable_shards
        assert len(shards) == NUM_FAKE_DEVICES
        # Device d holds row d of the [local_devices, per_device, ...] batch.
        for shard in shards:
            np.testing.assert_array_equal(np.asarray(shard.data), host[k][shard.index])
            assert shard.data.shape[0] == 1
        np.testing.assert_array_equal(np.asarray(x), host[k])


def test_two_processes_slice_the_same_global_batch(source):
    one = _pipe(source).host_batch(7)
    parts = []
    for process in range(2):
        pipe = _pipe(source)
        # 2 hosts x 2 local devices: same 4-device global batch, half each.
        pipe.process_index, pipe.process_count, pipe.local_devices = process, 2, 2
        part = pipe.host_batch(7)
        assert part["user"].shape == (2, PER_DEVICE)
        assert part["negatives"].shape == (2, PER_DEVICE, NUM_NEG)
        parts.append(part)
    for k in one:
        np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), one[k], err_msg=k)
    assert not np.array_equal(parts[0]["user"], parts[1]["user"])


def test_batch_larger_than_data_is_refused(ml100k_ratio, source):
    with pytest.raises(ValueError, match="exceeds"):
        TrainPipeline(source, source.num_examples, seed=0, engine="numpy")
    with pytest.raises(ValueError, match="engine"):
        TrainPipeline(source, PER_DEVICE, seed=0, engine="torch")


# ---------------------------------------------------------------------------
# Negative sampling.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["uniform", "popularity"])
def test_negatives_never_hit_training_positives(ml100k_ratio, kind):
    data = ml100k_ratio
    sampler = NegativeSampler(data, kind)
    users = data.dataset.user[data.split.train]
    negatives = sampler.sample(users, 4, np.random.default_rng(0))
    assert negatives.shape == (len(users), 4) and negatives.dtype == np.int32
    positives = set(zip(data.dataset.user[data.split.train].tolist(),
                        data.dataset.item[data.split.train].tolist()))
    drawn = set(zip(np.repeat(users, 4).tolist(), negatives.reshape(-1).tolist()))
    assert not drawn & positives
    assert negatives.min() >= 0 and negatives.max() < data.num_items
    # Not degenerate: most of the catalogue shows up.
    assert len(np.unique(negatives)) > 0.9 * data.num_items


def test_popularity_sampling_favours_popular_items(ml100k_ratio):
    data = ml100k_ratio
    users = np.repeat(np.arange(data.num_users), 200)
    draws = {kind: NegativeSampler(data, kind).sample(users, 1, np.random.default_rng(0))[:, 0]
             for kind in ("uniform", "popularity")}
    pop = data.item_popularity
    mean_pop = {k: pop[v].mean() for k, v in draws.items()}
    assert mean_pop["popularity"] > 2 * mean_pop["uniform"]
    head_share = {k: data.head_items[v].mean() for k, v in draws.items()}
    assert head_share["uniform"] == pytest.approx(0.2, abs=0.03)
    assert head_share["popularity"] > 0.5
    # Frequencies follow (count + 1): rank correlation with popularity is strong.
    freq = np.bincount(draws["popularity"], minlength=data.num_items)
    ranks = lambda x: np.argsort(np.argsort(x))  # noqa: E731
    assert np.corrcoef(ranks(freq), ranks(pop))[0, 1] > 0.8
    with pytest.raises(ValueError, match="negative sampling"):
        NegativeSampler(data, "hard")


def test_bitmap_and_binary_search_membership_agree(ml100k_ratio, source):
    """The bitmap lookup is a speed-up only: same answers, hence the same batches."""
    data = ml100k_ratio
    fast, slow = NegativeSampler(data), NegativeSampler(data, max_bitmap_bytes=0)
    assert fast.bitmap is not None and slow.bitmap is None
    rng = np.random.default_rng(0)
    users = np.concatenate([data.dataset.user[data.split.train],
                            rng.integers(0, data.num_users, 50_000)])
    items = np.concatenate([data.dataset.item[data.split.train],
                            rng.integers(0, data.num_items, 50_000)])
    np.testing.assert_array_equal(fast.is_positive(users, items), slow.is_positive(users, items))
    assert fast.is_positive(users[:1000], items[:1000]).all()  # training pairs
    slow_source = PairSource(data, slow, num_negatives=NUM_NEG)
    for step in (0, 5):
        a = _pipe(source).host_batch(step)
        b = _pipe(slow_source).host_batch(step)
        _assert_same([a], [b])


@pytest.mark.parametrize("targets", ["heldout", "all"])
def test_profile_source_hides_part_of_each_bag(ml100k_ratio, targets):
    from rec_jax.data.sources import ProfileSource
    source = ProfileSource(ml100k_ratio, max_len=64, holdout=0.3, targets=targets)
    ids = np.arange(40)
    batch = source.make_batch(ids, np.random.default_rng(3))
    again = source.make_batch(ids, np.random.default_rng(3))
    other = source.make_batch(ids, np.random.default_rng(4))
    for k in batch:
        np.testing.assert_array_equal(batch[k], again[k])  # a function of the rng
    assert not np.array_equal(batch["inputs"], other["inputs"])  # and it varies with it
    train = ml100k_ratio.train
    hidden_share = []
    for k, u in enumerate(batch["user"]):
        items, values = train.row(u), train.row_values(u)
        shown = batch["inputs"][k][batch["inputs"][k] >= 0]
        target = batch["targets"][k][batch["targets"][k] >= 0]
        # Left-aligned, no duplicates, all from the user's own training items.
        assert (batch["inputs"][k][:len(shown)] >= 0).all()
        assert len(set(shown)) == len(shown) and len(set(target)) == len(target)
        assert set(shown) <= set(items) and set(target) <= set(items)
        assert len(shown) >= 1
        if targets == "heldout":
            assert len(target) >= 1 and not set(shown) & set(target)
            assert len(shown) + len(target) == min(len(items), 64)
            hidden_share.append(len(target) / (len(shown) + len(target)))
        else:
            assert set(shown) < set(target) and len(target) == min(len(items), 64)
        rating = dict(zip(items, values))
        np.testing.assert_array_equal(batch["target_ratings"][k][:len(target)],
                                      [rating[i] for i in target])
        assert (batch["target_ratings"][k][len(target):] == 0).all()
    if hidden_share:
        assert 0.2 < np.mean(hidden_share) < 0.4
    with pytest.raises(ValueError, match="holdout"):
        ProfileSource(ml100k_ratio, 8, holdout=1.0)
    with pytest.raises(ValueError, match="targets"):
        ProfileSource(ml100k_ratio, 8, targets="some")
