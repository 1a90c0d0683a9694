"""The in-memory dataset: contiguous integer ids, side tables, and its cache.

The TFDS builder (:mod:`rec_jax.data.movielens`) is run once per source; its
examples are turned into plain numpy arrays here and saved as ``arrays.npz``
beside the TFDS files. Every later load (and every machine without
TensorFlow, such as a GPU box) reads that file with numpy alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os

import numpy as np

from rec_jax import console, errors
from rec_jax.data import raw

ARRAYS_VERSION = 1
_FIELDS = ("user", "item", "rating", "timestamp", "user_ids", "item_ids", "item_title",
           "item_year", "item_genres", "user_age", "user_gender", "user_occupation", "user_zip")


@dataclasses.dataclass
class Dataset:
    """MovieLens with contiguous ids. Interaction arrays are aligned by row.

    Attributes:
      name: e.g. "ml-100k".
      user, item: [num_interactions] int32 contiguous ids.
      rating: [num_interactions] float32.
      timestamp: [num_interactions] int64 (unix seconds).
      user_ids, item_ids: [num_users] / [num_items] original ids (str).
      item_title: [num_items] str; item_year: [num_items] int32 (0 = unknown);
      item_genres: [num_items, len(raw.GENRES)] bool multi-hot.
      user_age: [num_users] int32; user_gender, user_occupation, user_zip:
        [num_users] str.
    """

    name: str
    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    timestamp: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    item_title: np.ndarray
    item_year: np.ndarray
    item_genres: np.ndarray
    user_age: np.ndarray
    user_gender: np.ndarray
    user_occupation: np.ndarray
    user_zip: np.ndarray

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def num_interactions(self) -> int:
        return len(self.user)

    def stats(self) -> dict:
        n = self.num_interactions
        return {
            "users": self.num_users, "items": self.num_items, "interactions": n,
            "density": n / (self.num_users * self.num_items),
            "mean_rating": float(self.rating.mean()) if n else 0.0,
            "positive_rate(rating>=4)": float((self.rating >= 4).mean()) if n else 0.0,
        }

    def describe(self) -> str:
        s = self.stats()
        return (f"{self.name}: {s['users']:,} users, {s['items']:,} items, "
                f"{s['interactions']:,} interactions (density {s['density']:.4f}, "
                f"{100 * s['positive_rate(rating>=4)']:.1f}% rated >= 4)")

    def save(self, path: str) -> None:
        arrays = {f: getattr(self, f) for f in _FIELDS}
        arrays["name"] = np.array(self.name)
        arrays["version"] = np.array(ARRAYS_VERSION)
        tmp = path + ".tmp.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, path)  # Atomic: a killed save never leaves a torn file.

    @classmethod
    def load(cls, path: str) -> "Dataset":
        with np.load(path, allow_pickle=False) as f:
            version = int(f["version"])
            if version != ARRAYS_VERSION:
                raise errors.StaleInputError(f"{path}: arrays version {version}, this code "
                                             f"reads {ARRAYS_VERSION}; delete the file to "
                                             "re-prepare it")
            return cls(name=str(f["name"]), **{k: f[k] for k in _FIELDS})


def _sorted_ids(values: np.ndarray) -> np.ndarray:
    """Unique ids in numeric order when they are all integers, else lexicographic."""
    unique = np.unique(values)
    if all(v.isdigit() for v in unique):
        unique = unique[np.argsort(unique.astype(np.int64), kind="stable")]
    return unique


def from_examples(name: str, ex: dict) -> Dataset:
    """Builds a Dataset from column arrays of the TFDS examples (bytes decoded)."""
    def text(column):
        return np.array([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in column])

    user_raw, item_raw = text(ex["user_id"]), text(ex["item_id"])
    user_ids, item_ids = _sorted_ids(user_raw), _sorted_ids(item_raw)
    lookup_user = {u: k for k, u in enumerate(user_ids)}
    lookup_item = {i: k for k, i in enumerate(item_ids)}
    user = np.fromiter((lookup_user[u] for u in user_raw), np.int32, len(user_raw))
    item = np.fromiter((lookup_item[i] for i in item_raw), np.int32, len(item_raw))
    # Side fields repeat on every rating row; take each id's first row.
    first_user = np.unique(user, return_index=True)[1]
    first_item = np.unique(item, return_index=True)[1]
    timestamp = np.asarray(ex["timestamp"], np.int64)
    # A canonical row order (by user, time, item) so the arrays do not depend
    # on how TFDS shuffled the records on disk.
    order = np.lexsort((item, timestamp, user))
    return Dataset(
        name=name,
        user=user[order], item=item[order],
        rating=np.asarray(ex["rating"], np.float32)[order], timestamp=timestamp[order],
        user_ids=user_ids, item_ids=item_ids,
        item_title=text(np.asarray(ex["item_title"])[first_item]),
        item_year=np.asarray(ex["item_year"], np.int32)[first_item],
        item_genres=np.asarray(ex["item_genres"], np.bool_)[first_item],
        user_age=np.asarray(ex["user_age"], np.int32)[first_user],
        user_gender=text(np.asarray(ex["user_gender"])[first_user]),
        user_occupation=text(np.asarray(ex["user_occupation"])[first_user]),
        user_zip=text(np.asarray(ex["user_zip"])[first_user]),
    )


def resolve_source(variant: str, source_dir: str | None) -> str:
    if source_dir:
        return os.path.abspath(os.path.expanduser(source_dir))
    if variant == "100k":
        return raw.recbole_ml100k_dir()
    raise errors.MissingInputError(
        f"config.data.variant='{variant}' needs config.data.source_dir: a GroupLens "
        f"ml-{variant} directory (ratings.dat, movies.dat, users.dat)")


@contextlib.contextmanager
def _file_lock(path: str):
    """Serialises preparation when several processes (hosts) start together."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def prepared_dir(data_dir: str, variant: str, source_dir: str | None) -> str:
    """Where a source's prepared files live: one folder per (variant, source)."""
    source = resolve_source(variant, source_dir)
    return os.path.join(os.path.expanduser(data_dir), f"{variant}_{raw.source_digest(source)}")


def load(variant: str = "100k", data_dir: str = "data", source_dir: str | None = None,
         prepared: str | None = None) -> Dataset:
    """Loads MovieLens, preparing it through TFDS the first time.

    Args:
      variant: "100k" or "1m" (the TFDS builder config).
      data_dir: root for prepared data; reused across runs.
      source_dir: raw MovieLens directory; None means the default for the
        variant (the RecBole wheel for 100k).
      prepared: a prepared folder (holding arrays.npz) to read as is, with
        neither the raw files nor TensorFlow; e.g. one copied to a GPU box.

    Returns:
      The dataset (``describe()`` summarises it).
    """
    if prepared:
        arrays_path = os.path.join(os.path.expanduser(prepared), "arrays.npz")
        if not os.path.exists(arrays_path):
            raise errors.MissingInputError(
                f"config.data.prepared={prepared!r} has no arrays.npz; prepare the data on a "
                "machine with TensorFlow (any run with the same data settings) and copy the "
                "folder data/<variant>_<digest>/")
        return Dataset.load(arrays_path)
    folder = prepared_dir(data_dir, variant, source_dir)
    arrays_path = os.path.join(folder, "arrays.npz")
    with _file_lock(os.path.join(folder, ".lock")):
        if not os.path.exists(arrays_path):
            dataset = _prepare_with_tfds(variant, folder, resolve_source(variant, source_dir))
            dataset.save(arrays_path)
    return Dataset.load(arrays_path)


def _prepare_with_tfds(variant: str, folder: str, source: str) -> Dataset:
    # TensorFlow is imported only here, the one place that needs it.
    import tensorflow_datasets as tfds

    from rec_jax.data import movielens
    console.say(f"preparing ml-{variant} from {source} into {folder} (once)")
    builder = movielens.prepare(variant, os.path.join(folder, "tfds"), source)
    columns: dict[str, list] = {}
    for batch in tfds.as_numpy(builder.as_dataset(split="train").batch(65536)):
        for k, v in batch.items():
            columns.setdefault(k, []).append(v)
    examples = {k: np.concatenate(v) for k, v in columns.items()}
    return from_examples(f"ml-{variant}", examples)


def append_interactions(dataset: Dataset, path: str) -> Dataset:
    """The dataset with the interactions of a JSON-lines log appended.

    Each line: {"user_id": str, "item_id": str, "rating": number or null,
    "timestamp": int} with ids the dataset knows (what the service's
    ``POST /interactions`` writes). A missing rating counts as 0 (not a CTR
    positive). A malformed line is a DataError naming the file, line and field.
    """
    import json

    if not os.path.exists(path):
        raise errors.MissingInputError(f"config.data.extra_interactions={path!r}: no such file")
    user_row = {u: k for k, u in enumerate(dataset.user_ids)}
    item_row = {i: k for k, i in enumerate(dataset.item_ids)}
    users, items, ratings, stamps = [], [], [], []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}, line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise errors.DataError(f"{where}: not JSON ({e.msg})") from None
            if not isinstance(record, dict):
                raise errors.DataError(f"{where}: expected an object, got {line.strip()[:40]!r}")
            for field, table in (("user_id", user_row), ("item_id", item_row)):
                if str(record.get(field)) not in table:
                    raise errors.DataError(f"{where}, field {field!r}: unknown id "
                                           f"{record.get(field)!r}")
            rating, stamp = record.get("rating"), record.get("timestamp")
            if rating is not None and not isinstance(rating, (int, float)):
                raise errors.DataError(f"{where}, field 'rating': not a number: {rating!r}")
            if not isinstance(stamp, int) or isinstance(stamp, bool) or stamp < 0:
                raise errors.DataError(f"{where}, field 'timestamp': not a unix time: {stamp!r}")
            users.append(user_row[str(record["user_id"])])
            items.append(item_row[str(record["item_id"])])
            ratings.append(0.0 if rating is None else float(rating))
            stamps.append(stamp)
    user = np.concatenate([dataset.user, np.asarray(users, np.int32)])
    item = np.concatenate([dataset.item, np.asarray(items, np.int32)])
    timestamp = np.concatenate([dataset.timestamp, np.asarray(stamps, np.int64)])
    rating = np.concatenate([dataset.rating, np.asarray(ratings, np.float32)])
    order = np.lexsort((item, timestamp, user))  # the canonical row order of from_examples
    return dataclasses.replace(dataset, user=user[order], item=item[order],
                               rating=rating[order], timestamp=timestamp[order])
