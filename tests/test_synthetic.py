"""Tests for the synthetic MovieLens generator (ml-1m layout)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from rec_jax.bench import synthetic

N = 20_000
ML1M_GENRES = (
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical",
    "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
AGES = {1, 18, 25, 35, 45, 50, 56}
FILES = ("ratings.dat", "movies.dat", "users.dat")
TITLE = re.compile(r"^(\S.*) \((\d{4})\)$")


# ---------------------------------------------------------------------------
# A tiny independent parser for the ml-1m layout.
# ---------------------------------------------------------------------------
def _lines(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data.endswith(b"\n")
    text = data.decode("latin-1")
    assert "\r" not in text
    return text[:-1].split("\n")


def parse(d):
    ratings = []
    for line in _lines(os.path.join(d, "ratings.dat")):
        f = line.split("::")
        assert len(f) == 4, line
        assert all(re.fullmatch(r"\d+", x) for x in f), line
        ratings.append([int(x) for x in f])
    ratings = np.array(ratings, dtype=np.int64)

    movies = []
    for line in _lines(os.path.join(d, "movies.dat")):
        f = line.split("::")
        assert len(f) == 3, line
        mid, title, genres = f
        m = TITLE.match(title)
        assert m, title
        genres = genres.split("|")
        assert genres and len(set(genres)) == len(genres), line
        assert set(genres) <= set(ML1M_GENRES), line
        movies.append((int(mid), m.group(1), int(m.group(2)), genres))

    users = []
    for line in _lines(os.path.join(d, "users.dat")):
        f = line.split("::")
        assert len(f) == 5, line
        uid, gender, age, occ, zip_code = f
        assert gender in ("M", "F"), line
        assert int(age) in AGES, line
        assert 0 <= int(occ) <= 20 and occ == str(int(occ)), line
        assert re.fullmatch(r"\d{5}", zip_code), line
        users.append(int(uid))
    return ratings, movies, users


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("syn"))
    stats = synthetic.generate(d, N, seed=0)
    ratings, movies, users = parse(d)
    return d, stats, ratings, movies, users


def _genre_matrix(movies):
    gm = np.zeros((len(movies) + 1, len(ML1M_GENRES)))
    for mid, _, _, genres in movies:
        gm[mid, [ML1M_GENRES.index(g) for g in genres]] = 1.0
    return gm


# ---------------------------------------------------------------------------
# Layout and ids.
# ---------------------------------------------------------------------------
def test_layout_and_ids(data):
    d, stats, ratings, movies, users = data
    assert sorted(os.listdir(d)) == sorted(FILES)
    u, i, r, t = ratings.T
    assert len(ratings) == N == stats["num_interactions"]
    assert set(np.unique(r)) == {1, 2, 3, 4, 5}
    # ml-1m window, unix seconds.
    assert t.min() >= 956_703_932 and t.max() <= 1_046_454_590
    # Side files: contiguous ids from 1, in order.
    assert [m[0] for m in movies] == list(range(1, len(movies) + 1))
    assert users == list(range(1, len(users) + 1))
    assert len(movies) == stats["num_items"]
    assert len(users) == stats["num_users"]
    # Every user rates; rated items are catalogue items, nearly all rated.
    assert np.array_equal(np.unique(u), np.arange(1, len(users) + 1))
    assert i.min() >= 1 and i.max() <= len(movies)
    assert len(np.unique(i)) == stats["num_rated_items"]
    assert stats["num_rated_items"] >= 0.9 * len(movies)
    # File sorted by user id.
    assert np.all(np.diff(u) >= 0)
    # Titles and years.
    years = np.array([m[2] for m in movies])
    assert years.min() >= 1930 and years.max() <= 2000
    titles = [f"{m[1]} ({m[2]})" for m in movies]
    assert len(set(titles)) == len(titles)


def test_no_duplicate_pairs(data):
    _, _, ratings, movies, _ = data
    keys = ratings[:, 0] * (len(movies) + 1) + ratings[:, 1]
    assert len(np.unique(keys)) == len(keys)


def test_user_counts_heavy_tailed(data):
    _, stats, ratings, _, users = data
    counts = np.bincount(ratings[:, 0])[1:]
    assert counts.min() >= 20
    assert counts.min() == stats["user_count_min"]
    # Heavy tail: the most active user rates far more than the median one.
    assert counts.max() >= 5 * np.median(counts)


def test_timestamps_non_decreasing_per_user(data):
    _, _, ratings, _, _ = data
    u, t = ratings[:, 0], ratings[:, 3]
    same_user = u[1:] == u[:-1]
    assert np.all(t[1:][same_user] >= t[:-1][same_user])
    # Not degenerate: users' histories span some time.
    starts = np.r_[0, np.flatnonzero(~same_user) + 1]
    spans = np.maximum.reduceat(t, starts) - np.minimum.reduceat(t, starts)
    assert np.mean(spans > 0) > 0.9


def test_popularity_skew(data):
    _, stats, ratings, movies, _ = data
    counts = np.sort(np.bincount(ratings[:, 1], minlength=len(movies) + 1)[1:])
    top = counts[::-1][: len(counts) // 5].sum() / counts.sum()
    assert top > 0.5
    assert abs(top - stats["top20pct_item_share"]) < 0.01


# ---------------------------------------------------------------------------
# Learnable signal.  Each check would fail for ratings drawn independently of
# users' tastes (correlations ~0 with a few hundred / thousand cells).
# ---------------------------------------------------------------------------
def _split_half_genre_deviation(ratings, gm):
    """Per (user, genre) mean rating minus the user's mean, in two halves.

    Halves alternate along each user's history; the population-wide genre
    effect is removed so only *user-specific* genre taste remains.
    """
    u, i, r = ratings[:, 0], ratings[:, 1], ratings[:, 2].astype(float)
    num_users = u.max() + 1
    pos = np.arange(len(u)) - np.searchsorted(u, u)
    out = []
    for half in (0, 1):
        sel = pos % 2 == half
        n_u = np.bincount(u[sel], minlength=num_users)
        mean_u = np.bincount(u[sel], weights=r[sel],
                             minlength=num_users) / np.maximum(n_u, 1)
        dev = r[sel] - mean_u[u[sel]]
        g = gm[i[sel]]
        s = np.zeros((num_users, gm.shape[1]))
        c = np.zeros((num_users, gm.shape[1]))
        np.add.at(s, u[sel], g * dev[:, None])
        np.add.at(c, u[sel], g)
        out.append((s / np.maximum(c, 1), c))
    (da, ca), (db, cb) = out
    ok = (ca >= 3) & (cb >= 3)
    da = da - np.nanmean(np.where(ok, da, np.nan), axis=0)
    db = db - np.nanmean(np.where(ok, db, np.nan), axis=0)
    return da, db, ok


def test_genre_preference_is_predictive(data):
    _, _, ratings, movies, _ = data
    da, db, ok = _split_half_genre_deviation(ratings, _genre_matrix(movies))
    assert ok.sum() > 500
    # (1) User-specific genre taste replicates across halves of the history.
    corr = np.corrcoef(da[ok], db[ok])[0, 1]
    assert corr > 0.25, corr
    # (2) A user's preferred genre, picked on one half, is rated above the
    # user's other genres on the other half.
    gaps = []
    for user in np.flatnonzero(ok.sum(1) >= 2):
        cols = np.flatnonzero(ok[user])
        best = cols[np.argmax(da[user, cols])]
        others = cols[cols != best]
        gaps.append(db[user, best] - db[user, others].mean())
    assert len(gaps) > 100
    assert np.mean(gaps) > 0.15, np.mean(gaps)


def test_ratings_follow_latent_affinity(data):
    _, stats, ratings, _, _ = data
    m = synthetic.latent_model(0, stats["num_users"], stats["num_items"])
    u, i, r = ratings[:, 0] - 1, ratings[:, 1] - 1, ratings[:, 2]
    aff = synthetic.affinity(m, u, i)
    assert np.corrcoef(aff, r)[0, 1] > 0.4
    # Users also pick items they like: rated pairs beat random pairs.
    rng = np.random.default_rng(0)
    ru = rng.integers(0, stats["num_users"], len(u))
    ri = rng.integers(0, stats["num_items"], len(u))
    assert aff.mean() > synthetic.affinity(m, ru, ri).mean() + 0.3


def test_item_effect_replicates(data):
    _, _, ratings, movies, _ = data
    u, i, r = ratings[:, 0], ratings[:, 1], ratings[:, 2].astype(float)
    half = (np.arange(len(u)) - np.searchsorted(u, u)) % 2
    means, counts = [], []
    for h in (0, 1):
        c = np.bincount(i[half == h], minlength=len(movies) + 1)
        s = np.bincount(i[half == h], weights=r[half == h],
                        minlength=len(movies) + 1)
        means.append(s / np.maximum(c, 1))
        counts.append(c)
    ok = (counts[0] >= 10) & (counts[1] >= 10)
    assert ok.sum() > 100
    assert np.corrcoef(means[0][ok], means[1][ok])[0, 1] > 0.3


def test_titles_carry_genre_words(data):
    _, _, _, movies, _ = data
    own = other = 0
    rng = np.random.default_rng(0)
    for _, title, _, genres in movies:
        words = set(title.replace("'s", "").split())
        gids = [ML1M_GENRES.index(g) for g in genres]
        lex = [set(a) | set(n) for a, n in synthetic.GENRE_WORDS]
        own += any(words & lex[g] for g in gids)
        o = rng.choice([g for g in range(18) if g not in gids])
        other += bool(words & lex[o])
    assert own / len(movies) > 0.5
    assert other / len(movies) < 0.1


def test_history_order_carries_signal(data):
    """Consecutive items share genres more than a within-user shuffle."""
    _, _, ratings, movies, _ = data
    gm = _genre_matrix(movies)
    u, i = ratings[:, 0], ratings[:, 1]

    def consecutive_cos(items):
        g1, g2 = gm[items[:-1]], gm[items[1:]]
        cos = (g1 * g2).sum(1) / np.sqrt(g1.sum(1) * g2.sum(1))
        return cos[u[1:] == u[:-1]].mean()

    shuffled = i[np.lexsort((np.random.default_rng(0).random(len(u)), u))]
    assert consecutive_cos(i) > consecutive_cos(shuffled) + 0.1


# ---------------------------------------------------------------------------
# Determinism, CLI, errors, compatibility.
# ---------------------------------------------------------------------------
def _read_all(d):
    out = {}
    for name in FILES:
        with open(os.path.join(d, name), "rb") as f:
            out[name] = f.read()
    return out


def test_deterministic_for_seed(data, tmp_path):
    d0, _, _, _, _ = data
    synthetic.generate(str(tmp_path / "same"), N, seed=0)
    synthetic.generate(str(tmp_path / "other"), N, seed=1)
    a, b, c = _read_all(d0), _read_all(tmp_path / "same"), _read_all(
        tmp_path / "other")
    assert a == b
    for name in FILES:
        assert a[name] != c[name], name


def test_explicit_sizes_and_errors(tmp_path):
    stats = synthetic.generate(str(tmp_path / "s"), 3_000, seed=2,
                               num_users=100, num_items=400)
    ratings, movies, users = parse(str(tmp_path / "s"))
    assert len(ratings) == 3_000 and len(movies) == 400 and len(users) == 100
    assert np.bincount(ratings[:, 0])[1:].min() >= 20
    assert stats["user_count_max"] <= 0.6 * 400
    with pytest.raises(ValueError):  # fewer than 20 ratings per user
        synthetic.generate(str(tmp_path / "e1"), 1_000, num_users=100)
    with pytest.raises(ValueError):  # more than the catalogue allows
        synthetic.generate(str(tmp_path / "e2"), 10_000, num_users=20,
                           num_items=100)


def test_default_sizes_follow_movielens():
    assert synthetic.default_sizes(100_000) == (943, 1682)
    assert synthetic.default_sizes(1_000_209) == (6040, 3706)
    users, items = synthetic.default_sizes(10_000_054)
    assert (users, items) == (69878, 10677)
    for n in (20, 500, 20_000, 3_000_000, 50_000_000):
        users, items = synthetic.default_sizes(n)
        assert 20 * users <= n <= users * int(0.6 * items)


def test_cli(tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run(
        [sys.executable, "-m", "rec_jax.bench.synthetic", "--out", str(out),
         "--num_interactions", "2000", "--seed", "3"],
        capture_output=True, text=True, check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    stats = json.loads(proc.stdout)
    assert stats["num_interactions"] == 2000 and stats["seed"] == 3
    synthetic.generate(str(tmp_path / "api"), 2000, seed=3)
    assert _read_all(out) == _read_all(tmp_path / "api")


def test_project_reader_accepts_output(data):
    """The project's raw MovieLens reader parses the files unchanged."""
    raw = pytest.importorskip("rec_jax.data.raw")
    d, stats, _, _, _ = data
    parsed = raw.read(d)
    assert parsed.layout == "grouplens_1m"
    assert len(parsed.interactions) == N
    assert len(parsed.items) == stats["num_items"]
    assert len(parsed.users) == stats["num_users"]


# Bytes of generate(d, N, seed=0) (ratings, movies, users) as the generator
# wrote them before its speed-up (sorted keys, str.format per line): the
# speed-up changed no byte. Pinned for the numpy version it was taken with
# (the files depend on numpy's random streams).
_GOLDEN_SHA256 = "2ea1725229dd1e4fee0d5353d57ee662b541e3fe8e28214c292121bfb0509b4c"
_GOLDEN_NUMPY = "2.4.6"


def test_output_bytes_unchanged_by_speedups(data):
    if np.__version__ != _GOLDEN_NUMPY:
        pytest.skip(f"golden bytes taken with numpy {_GOLDEN_NUMPY}")
    import hashlib
    d = data[0]
    digest = hashlib.sha256()
    for name in FILES:
        with open(os.path.join(d, name), "rb") as f:
            digest.update(f.read())
    assert digest.hexdigest() == _GOLDEN_SHA256


def test_line_formatter_matches_str_format():
    rng = np.random.default_rng(0)
    cols = [rng.integers(0, 10 ** k, 500) for k in (1, 4, 1, 10)]
    cols[0][:4] = [0, 9, 10, 0]
    cols[3][:4] = [0, 1_046_454_590, 10, 99]
    want = "".join(map("{}::{}::{}::{}\n".format, *[c.tolist() for c in cols]))
    assert synthetic._format_lines(*cols) == want.encode("ascii")
    empty = np.zeros(0, np.int64)
    assert synthetic._format_lines(empty, empty, empty, empty) == b""


def test_top_k_row_equals_full_sort_with_ties():
    rng = np.random.default_rng(1)
    for keys in (rng.standard_normal(50).astype(np.float32),
                 np.repeat(np.float32([0.5, 1.0, 2.0]), [20, 20, 10])):  # ties at the cut
        for k in (1, 7, 25, 49):
            srt = np.sort(keys)
            mask = keys >= srt[len(keys) - k]
            if mask.sum() != k:  # the old code's tie rule: a stable argsort
                mask[:] = False
                mask[np.argsort(-keys, kind="stable")[:k]] = True
            np.testing.assert_array_equal(synthetic._top_k_row(keys, k), np.flatnonzero(mask))


def test_numpy_reader_equals_tfds_builder(tmp_path):
    """The benchmark's numpy preparation gives the TFDS builder's dataset, array for array."""
    pytest.importorskip("tensorflow_datasets")
    from rec_jax.bench import data as bench_data
    from rec_jax.data import dataset as dataset_lib
    src = str(tmp_path / "src")
    # 400 items for 100 users: some movies are never rated (dropped by both).
    stats = synthetic.generate(src, 3_000, seed=4, num_users=100, num_items=400)
    assert stats["num_rated_items"] < 400
    want = dataset_lib.load("1m", str(tmp_path / "data"), src)
    got = bench_data.read_ml1m_arrays(src)
    assert got.name == want.name
    for field in dataset_lib._FIELDS:
        a, b = getattr(got, field), getattr(want, field)
        assert a.dtype == b.dtype, field
        np.testing.assert_array_equal(a, b, err_msg=field)
