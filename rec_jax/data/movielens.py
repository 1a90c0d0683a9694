"""TFDS builder for MovieLens: ratings with the item and user side information.

Each example is one rating with its item (title, year, genres) and user (age,
gender, occupation, zip) fields alongside, the denormalised shape that the
TFDS catalogue's own MovieLens builder uses. Items never rated carry no
signal for a recommender and are dropped; ids stay the original strings here
and become contiguous integers in :mod:`rec_jax.data.dataset`.

Builder configs:

* ``100k`` (default): MovieLens-100K. Read from the RecBole atomic files in the
  ``recbole`` wheel unless a GroupLens ``ml-100k/`` (or atomic) directory is
  given as the manual directory.
* ``1m``: MovieLens-1M from a GroupLens ``ml-1m/`` directory the user gives
  (``source_dir``); the synthetic generator writes the same layout.

This module imports TensorFlow; training never needs to: the prepared arrays
are saved once by :mod:`rec_jax.data.dataset` and read back with numpy.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

from rec_jax import errors
from rec_jax.data import raw

_DESCRIPTION = """MovieLens ratings with item text (title, year, genres) and user
profile (age, gender, occupation, zip code), one example per rating."""

_MANUAL = """For the `100k` config nothing is needed (the RecBole wheel carries the
files). For `1m`, download ml-1m from https://grouplens.org/datasets/movielens/
and pass the unpacked directory as `source_dir` (config.data.source_dir)."""


class MovieLensConfig(tfds.core.BuilderConfig):
    """Which MovieLens release; the default source applies when none is given."""

    def __init__(self, *, default_source: str | None, **kwargs):
        super().__init__(**kwargs)
        self.default_source = default_source


class RecJaxMovieLens(tfds.core.GeneratorBasedBuilder):
    """MovieLens ratings joined with item and user side files."""

    name = "rec_jax_movielens"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Ratings with item text and user profile fields."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL
    BUILDER_CONFIGS = [
        MovieLensConfig(name="100k", description="MovieLens-100K (943 users, 1,682 items).",
                        default_source="recbole"),
        MovieLensConfig(name="1m", description="MovieLens-1M from a GroupLens ml-1m directory.",
                        default_source=None),
    ]
    DEFAULT_CONFIG_NAME = "100k"

    def __init__(self, *, source_dir: str | None = None, **kwargs):
        self._source_dir = source_dir
        super().__init__(**kwargs)

    def source_dir(self) -> str:
        """The raw directory this builder reads (explicit, else the config default)."""
        if self._source_dir:
            return os.path.abspath(os.path.expanduser(self._source_dir))
        if self.builder_config.default_source == "recbole":
            return raw.recbole_ml100k_dir()
        raise errors.MissingInputError(
            f"MovieLens config '{self.builder_config.name}' needs a source directory "
            f"(config.data.source_dir). {_MANUAL}")

    def _info(self) -> tfds.core.DatasetInfo:
        text = tfds.features.Text()
        return self.dataset_info_from_configs(
            description=_DESCRIPTION,
            features=tfds.features.FeaturesDict({
                "user_id": text,
                "item_id": text,
                "rating": np.float32,
                "timestamp": np.int64,
                "item_title": text,
                "item_year": np.int32,
                # Multi-hot over raw.GENRES: a fixed shape, so batching never pads.
                "item_genres": tfds.features.Tensor(shape=(len(raw.GENRES),), dtype=np.bool_),
                "user_age": np.int32,
                "user_gender": text,
                "user_occupation": text,
                "user_zip": text,
            }),
            metadata=tfds.core.MetadataDict(),
            homepage="https://grouplens.org/datasets/movielens/",
        )

    # TFDS prints a download banner before and after preparing; nothing is
    # downloaded here (the files are local) and rec_jax.data.dataset says what
    # it prepares.
    def _log_download_bytes(self):
        pass

    def _log_download_done(self):
        pass

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing is downloaded: the files are local.
        source = self.source_dir()
        data = raw.read(source)
        self.info.metadata["source_dir"] = source
        self.info.metadata["source_digest"] = raw.source_digest(source)
        self.info.metadata["layout"] = data.layout
        return {"train": self._generate_examples(data)}

    def _generate_examples(self, data: raw.RawMovieLens):
        genre_index = {g: k for k, g in enumerate(raw.GENRES)}
        items = {it.item: it for it in data.items}
        multi_hot = {}
        for it in data.items:
            multi_hot[it.item] = np.zeros(len(raw.GENRES), np.bool_)
            multi_hot[it.item][[genre_index[g] for g in it.genres]] = True
        users = {u.user: u for u in data.users}
        x = data.interactions
        for k in range(len(x)):
            item, user = items[x.item[k]], users[x.user[k]]
            yield k, {
                "user_id": x.user[k], "item_id": x.item[k],
                "rating": x.rating[k], "timestamp": x.timestamp[k],
                "item_title": item.title, "item_year": item.year,
                "item_genres": multi_hot[item.item],
                "user_age": user.age, "user_gender": user.gender,
                "user_occupation": user.occupation, "user_zip": user.zip_code,
            }


def prepare(variant: str, data_dir: str, source_dir: str | None = None) -> RecJaxMovieLens:
    """Prepares (once) and returns the builder; later calls reuse the files.

    Without TFDS's progress bars: a few seconds of local work, said in one
    line by rec_jax.data.dataset.
    """
    tfds.disable_progress_bar()
    builder = RecJaxMovieLens(config=variant, data_dir=data_dir, source_dir=source_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return builder
