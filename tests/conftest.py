"""Shared test setup: 4 fake CPU devices, the ml-100k dataset, tiny MovieLens folders.

The XLA flags must be set before JAX is first imported, which is why they sit
at module top level here: pytest imports conftest.py before any test module.
"""

from __future__ import annotations

import os

_FAKE_DEVICES = "--xla_force_host_platform_device_count=4"
os.environ["XLA_FLAGS"] = " ".join(
    f for f in (os.environ.get("XLA_FLAGS", ""), _FAKE_DEVICES) if f).strip()
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

# One persistent XLA compilation cache per pytest session, shared with the
# child jobs (subprocess_env copies os.environ): the subprocess tests run the
# same tiny programs again and again (a resume after a kill, `--stage=eval`,
# the 2-process retries), and a cached executable is the one a fresh compile
# makes, so results do not change; a second tiny main job takes half the time.
# Each session starts empty (CI measures a cold start) unless the caller
# names a cache of their own.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _XLA_CACHE = tempfile.mkdtemp(prefix="rec_jax_test_xla_cache_")
    atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"

import csv  # noqa: E402
import math  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
# `rec_jax` and `configs` import from the checkout, also under a bare `pytest`.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
# The repo's gitignored data/ folder: the main job prepares ml-100k there too,
# so the ~15 s TFDS preparation happens once per checkout, not once per test run.
DATA_DIR = REPO_ROOT / "data"
NUM_FAKE_DEVICES = 4


def subprocess_env(devices: int = 1) -> dict:
    """Environment for a child `python` run: repo on the path, `devices` CPU devices."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def ndcg_from_csvs(recs_path, truth_path, k=10):
    """NDCG@k computed from recs_*.csv and truth_*.csv alone (what a reader would do)."""
    truth: dict[str, set] = {}
    with open(truth_path) as f:
        for row in csv.DictReader(f):
            truth.setdefault(row["user_id"], set()).add(row["item_id"])
    ranked: dict[str, list] = {}
    with open(recs_path) as f:
        for row in csv.DictReader(f):
            ranked.setdefault(row["user_id"], []).append((int(row["rank"]), row["item_id"]))
    total = 0.0
    for user, relevant in truth.items():
        items = [i for _, i in sorted(ranked[user])][:k]
        dcg = sum(1 / math.log2(r + 2) for r, i in enumerate(items) if i in relevant)
        idcg = sum(1 / math.log2(r + 2) for r in range(min(len(relevant), k)))
        total += dcg / idcg
    return total / len(truth)


@pytest.fixture(scope="session")
def data_dir() -> str:
    DATA_DIR.mkdir(exist_ok=True)
    return str(DATA_DIR)


@pytest.fixture(scope="session")
def ml100k(data_dir):
    """MovieLens-100K from the recbole wheel (prepared through TFDS once)."""
    from rec_jax.data import dataset
    return dataset.load("100k", data_dir=data_dir)


@pytest.fixture(scope="session")
def ml100k_ratio(ml100k):
    """ml-100k through the seed-0 ratio split (what configs/ml100k_mf.py trains on)."""
    from rec_jax.data import interactions, splits
    return interactions.build(ml100k, splits.make_split(ml100k, "ratio", seed=0))


# ---------------------------------------------------------------------------
# Tiny MovieLens folders in the three raw layouts.
# ---------------------------------------------------------------------------

# (item id, title, year, genres)
TINY_ITEMS = (
    ("10", "Toy Story", 1995, ("Animation", "Children's", "Comedy")),
    ("20", "GoldenEye", 1995, ("Action", "Adventure", "Thriller")),
    ("30", "Heat", 1996, ("Crime",)),
    ("40", "Alien", 1979, ("Horror", "Sci-Fi")),
    ("50", "Casablanca", 1942, ("Drama", "Romance", "War")),
)
# (user id, age, gender, occupation, zip); ages are ml-1m codes so all layouts share them.
TINY_USERS = (
    ("7", 25, "M", "programmer", "85711"),
    ("3", 35, "F", "writer", "94043"),
    ("12", 18, "M", "artist", "32067"),
)
# (user, item, rating, timestamp); item 50 is never rated (dropped by the builder).
TINY_RATINGS = (
    ("7", "10", 5, 881250949), ("7", "20", 3, 881250950), ("7", "30", 4, 881250951),
    ("3", "20", 1, 891717742), ("3", "40", 2, 891717743),
    ("12", "10", 4, 878887116), ("12", "40", 5, 878887117), ("12", "30", 3, 878887118),
)


def write_tiny_movielens(folder, layout: str, ratings=TINY_RATINGS, items=TINY_ITEMS,
                         users=TINY_USERS) -> str:
    """Writes a tiny MovieLens folder in `layout` and returns its path.

    Args:
      folder: target directory (created).
      layout: "atomic" (RecBole), "grouplens_100k" (u.data/u.item/u.user) or
        "grouplens_1m" (ratings.dat/movies.dat/users.dat).
      ratings, items, users: records as in TINY_RATINGS / TINY_ITEMS / TINY_USERS.
    """
    from rec_jax.data import raw
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def write(name, lines, encoding="latin-1"):
        (folder / name).write_text("".join(line + "\n" for line in lines), encoding=encoding)

    if layout == "atomic":
        write("tiny.inter", ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
              + [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in ratings], "utf-8")
        write("tiny.item", ["item_id:token\tmovie_title:token_seq\trelease_year:token\t"
                            "class:token_seq"]
              + [f"{i}\t{title}\t{year}\t{' '.join(g)}" for i, title, year, g in items], "utf-8")
        write("tiny.user", ["user_id:token\tage:token\tgender:token\toccupation:token\t"
                            "zip_code:token"]
              + [f"{u}\t{a}\t{g}\t{o}\t{z}" for u, a, g, o, z in users], "utf-8")
    elif layout == "grouplens_100k":
        write("u.data", [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in ratings])
        write("u.item", [
            f"{i}|{title} ({year})|01-Jan-{year}||http://imdb/{i}|"
            + "|".join("1" if g in genres else "0" for g in raw.GENRES_100K)
            for i, title, year, genres in items])
        write("u.user", [f"{u}|{a}|{g}|{o}|{z}" for u, a, g, o, z in users])
    elif layout == "grouplens_1m":
        write("ratings.dat", [f"{u}::{i}::{r}::{t}" for u, i, r, t in ratings])
        write("movies.dat", [f"{i}::{title} ({year})::{'|'.join(g)}"
                             for i, title, year, g in items])
        write("users.dat", [f"{u}::{g}::{a}::{raw.OCCUPATIONS_1M.index(o)}::{z}"
                            for u, a, g, o, z in users])
    else:
        raise ValueError(f"unknown layout {layout!r}")
    return str(folder)


@pytest.fixture
def tiny_movielens(tmp_path):
    """Factory: tiny_movielens(layout, **records) -> folder path under tmp_path."""
    def make(layout, name=None, **records):
        return write_tiny_movielens(tmp_path / (name or layout), layout, **records)
    return make
