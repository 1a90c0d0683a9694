"""Raw MovieLens parsers, the TFDS builder and the Dataset cache, on tiny folders."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import REPO_ROOT, TINY_ITEMS, TINY_RATINGS, TINY_USERS, subprocess_env
from rec_jax.bench import synthetic
from rec_jax.data import dataset, raw

LAYOUTS = ("atomic", "grouplens_100k", "grouplens_1m")
VARIANT = {"atomic": "100k", "grouplens_100k": "100k", "grouplens_1m": "1m"}
# The file of each kind, per layout.
FILES = {"atomic": ("tiny.inter", "tiny.item", "tiny.user"),
         "grouplens_100k": ("u.data", "u.item", "u.user"),
         "grouplens_1m": ("ratings.dat", "movies.dat", "users.dat")}
HEADER = {"atomic": 1, "grouplens_100k": 0, "grouplens_1m": 0}  # lines before the first record


# ---------------------------------------------------------------------------
# Parsing and the TFDS builder on tiny folders, all three layouts.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_raw_read_normalises_every_layout(tiny_movielens, layout):
    data = raw.read(tiny_movielens(layout))
    assert data.layout == layout
    x = data.interactions
    assert list(zip(x.user, x.item, x.rating, x.timestamp)) == [
        (u, i, float(r), t) for u, i, r, t in TINY_RATINGS]
    assert x.line[0] == 1 + HEADER[layout]  # line numbers are physical, 1-based
    assert [(it.item, it.title, it.year, it.genres) for it in data.items] == list(TINY_ITEMS)
    assert [(u.user, u.age, u.gender, u.occupation, u.zip_code) for u in data.users] == list(
        TINY_USERS)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_tfds_dataset_has_contiguous_ids_and_side_fields(tiny_movielens, tmp_path, layout):
    ds = dataset.load(VARIANT[layout], data_dir=str(tmp_path / "prepared"),
                      source_dir=tiny_movielens(layout))
    assert ds.name == f"ml-{VARIANT[layout]}"
    # Ids are contiguous from 0, ordered numerically ("3" < "7" < "12"), and
    # the never-rated item 50 is dropped.
    np.testing.assert_array_equal(ds.user_ids, ["3", "7", "12"])
    np.testing.assert_array_equal(ds.item_ids, ["10", "20", "30", "40"])
    assert ds.user.dtype == np.int32 and ds.item.dtype == np.int32
    assert set(ds.user.tolist()) == {0, 1, 2} and set(ds.item.tolist()) == {0, 1, 2, 3}
    # Every row maps back to the original rating.
    back = sorted(zip(ds.user_ids[ds.user], ds.item_ids[ds.item], ds.rating.tolist(),
                      ds.timestamp.tolist()))
    assert back == sorted((u, i, float(r), t) for u, i, r, t in TINY_RATINGS)
    # Canonical row order: by user, then time.
    assert np.all(np.diff(ds.user) >= 0)
    # Side fields, looked up through the id maps.
    items = {i: (title, year, genres) for i, title, year, genres in TINY_ITEMS}
    for k, item in enumerate(ds.item_ids):
        title, year, genres = items[item]
        assert ds.item_title[k] == title and ds.item_year[k] == year
        assert [raw.GENRES[g] for g in np.flatnonzero(ds.item_genres[k])] == sorted(
            genres, key=raw.GENRES.index)
    users = {u: (age, gender, occ, z) for u, age, gender, occ, z in TINY_USERS}
    for k, user in enumerate(ds.user_ids):
        assert (ds.user_age[k], ds.user_gender[k], ds.user_occupation[k],
                ds.user_zip[k]) == users[user]
    stats = ds.stats()
    assert (stats["users"], stats["items"], stats["interactions"]) == (3, 4, 8)
    assert stats["density"] == pytest.approx(8 / 12)
    assert stats["mean_rating"] == pytest.approx(27 / 8)
    assert stats["positive_rate(rating>=4)"] == pytest.approx(4 / 8)


def test_synthetic_ml1m_layout_through_the_builder(tmp_path):
    source = str(tmp_path / "syn")
    info = synthetic.generate(source, 3000, seed=0, num_users=60, num_items=300)
    ds = dataset.load("1m", data_dir=str(tmp_path / "prepared"), source_dir=source)
    assert ds.num_interactions == info["num_interactions"] == 3000
    assert ds.num_users == info["num_users"] == 60
    assert ds.num_items == info["num_rated_items"]
    assert len(np.unique(ds.user.astype(np.int64) * ds.num_items + ds.item)) == 3000
    with open(os.path.join(source, "ratings.dat"), encoding="latin-1") as f:
        first = f.readline().strip().split("::")
    rows = set(zip(ds.user_ids[ds.user], ds.item_ids[ds.item], ds.timestamp.tolist()))
    assert (first[0], first[1], int(first[3])) in rows


def test_ml100k_from_the_recbole_wheel(ml100k):
    ds = ml100k
    assert (ds.num_users, ds.num_items, ds.num_interactions) == (943, 1682, 100_000)
    assert ds.name == "ml-100k"
    np.testing.assert_array_equal(ds.user_ids[:3], ["1", "2", "3"])
    np.testing.assert_array_equal(np.unique(ds.user), np.arange(943))
    np.testing.assert_array_equal(np.unique(ds.item), np.arange(1682))
    assert ds.stats()["mean_rating"] == pytest.approx(3.52986, abs=1e-5)
    # The first row of the raw file: user 196 rated item 242 with 3 at 881250949.
    u, i = list(ds.user_ids).index("196"), list(ds.item_ids).index("242")
    row = np.flatnonzero((ds.user == u) & (ds.item == i))
    assert len(row) == 1
    assert ds.rating[row[0]] == 3 and ds.timestamp[row[0]] == 881250949
    toy = list(ds.item_ids).index("1")
    assert (ds.item_title[toy], ds.item_year[toy]) == ("Toy Story", 1995)
    assert {raw.GENRES[g] for g in np.flatnonzero(ds.item_genres[toy])} == {
        "Animation", "Children's", "Comedy"}
    first = list(ds.user_ids).index("1")
    assert (ds.user_age[first], ds.user_gender[first], ds.user_occupation[first],
            ds.user_zip[first]) == (24, "M", "technician", "85711")


def test_second_load_reads_arrays_without_tensorflow(ml100k, data_dir, tmp_path):
    """A prepared dataset loads on a machine where TensorFlow cannot be imported."""
    script = textwrap.dedent(f"""
        import sys
        sys.modules["tensorflow"] = None  # any import of it now raises ImportError
        sys.modules["tensorflow_datasets"] = None
        from rec_jax.data import dataset
        ds = dataset.load("100k", data_dir={data_dir!r})
        assert ds.num_interactions == 100_000, ds.num_interactions
        try:  # Preparing from scratch does need TensorFlow: the block is real.
            dataset.load("100k", data_dir={str(tmp_path / "empty")!r})
        except ImportError:
            print("OK")
        else:
            raise SystemExit("prepared without TensorFlow?")
    """)
    out = subprocess.run([sys.executable, "-c", script], env=subprocess_env(),
                         capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "OK", out.stderr[-3000:]
    assert os.path.exists(os.path.join(dataset.prepared_dir(data_dir, "100k", None), "arrays.npz"))


def test_prepared_folder_follows_the_source(tiny_movielens, tmp_path):
    a = dataset.prepared_dir(str(tmp_path), "100k", tiny_movielens("grouplens_100k", "a"))
    b = dataset.prepared_dir(str(tmp_path), "100k", tiny_movielens(
        "grouplens_100k", "b", ratings=TINY_RATINGS[:-1]))
    assert a != b  # different raw files never share prepared arrays


def test_unknown_layout_names_the_expected_files(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="ratings.dat"):
        raw.read(str(tmp_path / "empty"))


# ---------------------------------------------------------------------------
# Malformed files: DataFormatError names the file, the line and the field.
# ---------------------------------------------------------------------------


def _edit_line(path, lineno, new_text):
    with open(path, encoding="latin-1") as f:
        lines = f.read().split("\n")
    lines[lineno - 1] = new_text
    with open(path, "w", encoding="latin-1") as f:
        f.write("\n".join(lines))


def _expect_error(folder, file_name, line, field):
    with pytest.raises(raw.DataFormatError) as info:
        raw.read(folder)
    e = info.value
    assert os.path.basename(e.path) == file_name
    assert (e.line, e.field) == (line, field)
    message = str(e)
    assert file_name in message and f"line {line}" in message and f"'{field}'" in message
    return message


SEP = {"atomic": "\t", "grouplens_100k": "\t", "grouplens_1m": "::"}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_wrong_column_count(tiny_movielens, layout):
    folder = tiny_movielens(layout)
    ratings_file = FILES[layout][0]
    line = 3 + HEADER[layout]
    _edit_line(os.path.join(folder, ratings_file), line, SEP[layout].join(["7", "10", "5"]))
    message = _expect_error(folder, ratings_file, line, "timestamp")
    assert "found 3" in message
    _edit_line(os.path.join(folder, ratings_file), line,
               SEP[layout].join(["7", "10", "5", "881250949", "extra"]))
    _expect_error(folder, ratings_file, line, "timestamp")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_non_numeric_rating(tiny_movielens, layout):
    folder = tiny_movielens(layout)
    ratings_file = FILES[layout][0]
    line = 2 + HEADER[layout]
    _edit_line(os.path.join(folder, ratings_file), line,
               SEP[layout].join(["7", "20", "three", "881250950"]))
    assert "'three'" in _expect_error(folder, ratings_file, line, "rating")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_rated_item_missing_from_item_file(tiny_movielens, layout):
    ratings = TINY_RATINGS[:4] + (("3", "99", 4, 891717744),) + TINY_RATINGS[4:]
    folder = tiny_movielens(layout, ratings=ratings)
    message = _expect_error(folder, FILES[layout][0], 5 + HEADER[layout], "item_id")
    assert "'99'" in message and FILES[layout][1] in message


@pytest.mark.parametrize("layout", LAYOUTS)
def test_duplicate_item_id(tiny_movielens, layout):
    items = TINY_ITEMS + (("20", "GoldenEye Again", 1996, ("Action",)),)
    folder = tiny_movielens(layout, items=items)
    assert "'20'" in _expect_error(folder, FILES[layout][1], 6 + HEADER[layout], "item_id")


def test_duplicate_user_id(tiny_movielens):
    users = TINY_USERS + (("3", 45, "M", "writer", "11111"),)
    folder = tiny_movielens("grouplens_1m", users=users)
    _expect_error(folder, "users.dat", 4, "user_id")


def test_duplicate_rating_pair(tiny_movielens):
    ratings = TINY_RATINGS + (("7", "10", 1, 881250999),)
    folder = tiny_movielens("grouplens_100k", ratings=ratings)
    assert "duplicate" in _expect_error(folder, "u.data", 9, "item_id")


@pytest.mark.parametrize("layout,field", [("atomic", "class"), ("grouplens_1m", "genres")])
def test_unknown_genre(tiny_movielens, layout, field):
    items = TINY_ITEMS[:2] + (("30", "Heat", 1996, ("Crime", "Cartoon")),) + TINY_ITEMS[3:]
    folder = tiny_movielens(layout, items=items)
    assert "'Cartoon'" in _expect_error(folder, FILES[layout][1], 3 + HEADER[layout], field)


def test_bad_genre_flag_in_u_item(tiny_movielens):
    folder = tiny_movielens("grouplens_100k")
    path = os.path.join(folder, "u.item")
    with open(path, encoding="latin-1") as f:
        lines = f.read().split("\n")
    parts = lines[1].split("|")
    parts[5 + raw.GENRES_100K.index("Drama")] = "2"
    _edit_line(path, 2, "|".join(parts))
    _expect_error(folder, "u.item", 2, "genre_Drama")


def test_non_numeric_field_in_user_file(tiny_movielens):
    folder = tiny_movielens("grouplens_100k")
    _edit_line(os.path.join(folder, "u.user"), 2, "3|old|F|writer|94043")
    assert "'old'" in _expect_error(folder, "u.user", 2, "age")
