"""Synthetic MovieLens generator writing the GroupLens ml-1m file layout.

Produces ``ratings.dat``, ``movies.dat`` and ``users.dat`` (latin-1, ``::``
separated, no header, ids from 1) so any ml-1m reader can consume them
unchanged.  Intended for scale benchmarks (100k .. 10M+ interactions).

Generative model (all seeded, vectorised, streamed in user chunks; 10M
ratings take about 40 CPU-seconds of generation plus the file writes):

* Catalogue: each movie gets 1-4 of the 18 ml-1m genres (ml-1m genre
  frequencies), a release year in 1930-2000 (skewed to the 1990s) and a
  synthetic title such as ``"The Silent River (1994)"``.  Title words are
  drawn partly from genre-specific word lists ("Blood" for Horror, "Galaxy"
  for Sci-Fi, ...), so the text carries genre information too.
* Latent model: users have collaborative factors ``q_u``, an 18-d genre
  taste ``p_u`` (shifted by gender/age) and a bias; items have factors
  ``v_i`` (partly built from their genres), a bias correlated with
  popularity, and a Zipf popularity rank.  The affinity
  ``a_ui = q_u.v_i + p_u.g_i`` (``g_i`` = normalised genre multi-hot)
  drives both *which* items a user rates and *how* they rate them.
* Selection: user ``u`` rates ``k_u`` distinct items sampled without
  replacement (Gumbel top-k / Plackett-Luce) with log-weight
  ``-alpha*log(rank_i) + gamma*a_ui``: Zipf-like popularity, personalised,
  and no duplicate (user, item) pairs by construction.  The keys are drawn
  for a whole chunk at once; each user's k-th largest key comes from a
  partial sort (``np.partition``), not a full sort of the row.
* Counts: ``k_u = 20 + lognormal`` (heavy tailed, min 20; at 1M the
  quartiles come out close to ml-1m's 44/96/208), capped at
  ``max_user_fraction`` of the catalogue and rescaled so the total is exactly
  ``num_interactions``.
* Ratings: ``b_u + b_i + a_ui + noise`` discretised to 1..5 with thresholds
  chosen so the marginal matches ml-1m (5.6/10.8/26.1/34.9/22.6 %).
* Order and time: each user's history goes through genre "phases" (a
  user-specific random order of the items' primary genres, jittered) with a
  slow drift in factor space, so sequence order carries next-item signal.
  Inter-rating gaps are session-structured (seconds within a session, days
  between sessions) inside the ml-1m window (2000-04-25 .. 2003-02-28);
  timestamps are non-decreasing within a user (ties allowed, as in ml-1m).

``ratings.dat`` is sorted by user id, then by time.  ``movies.dat`` lists
every movie ``1..num_items``; as in ml-1m, a few unpopular movies may end up
with no ratings (see ``num_rated_items`` in the returned stats).

CLI::

    python -m rec_jax.bench.synthetic --out DIR --num_interactions N [--seed S]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from typing import Optional

import numpy as np

GENRES = (
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical",
    "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
# Number of ml-1m movies tagged with each genre (same order as GENRES).
_GENRE_COUNTS = np.array(
    [503, 283, 105, 251, 1200, 211, 127, 1603, 68, 44, 343, 114, 106, 471,
     276, 492, 143, 68], dtype=np.float64)
# P(number of genres = 1, 2, 3, 4).
_NUM_GENRES_P = np.array([0.52, 0.33, 0.12, 0.03])

AGE_CODES = (1, 18, 25, 35, 45, 50, 56)
_AGE_P = np.array([222, 1103, 2096, 1193, 550, 496, 380], dtype=np.float64)
_OCC_P = np.array([711, 528, 267, 173, 759, 112, 236, 679, 17, 92, 195, 129,
                   388, 142, 302, 144, 241, 502, 70, 72, 281], dtype=np.float64)
_P_MALE = 0.717

# ml-1m rating marginal for 1..5.
RATING_P = np.array([0.0562, 0.1075, 0.2613, 0.3489, 0.2261])

# ml-1m timestamp window.
T_START = 956_703_932   # 2000-04-25
T_END = 1_046_454_590   # 2003-02-28

MIN_USER_RATINGS = 20

# --------------------------------------------------------------------------
# Title vocabulary.
# --------------------------------------------------------------------------
_ADJ = (
    "Silent", "Last", "Lost", "Golden", "Broken", "Hidden", "Long", "Dark",
    "Bright", "Final", "Little", "Wild", "Blue", "Red", "Crimson", "Quiet",
    "Endless", "Forgotten", "Perfect", "Strange", "Lonely", "Secret", "Old",
    "New", "First", "Second", "Burning", "Frozen", "Distant", "Savage",
)
_NOUN = (
    "River", "Road", "City", "House", "Night", "Day", "Sun", "Moon", "Sea",
    "Garden", "Town", "Bridge", "Door", "Window", "Game", "Man", "Woman",
    "Girl", "Boy", "Family", "Season", "Year", "Hour", "Summer", "Dream",
    "Letter", "Stranger", "Train", "Mountain", "Valley", "Island", "Storm",
)
_NAMES = (
    "Jack", "Mary", "Harry", "Sally", "Max", "Annie", "Billy", "Grace", "Sam",
    "Rosie", "Eddie", "Lucy", "Frank", "Emma", "Charlie", "Molly", "Joe",
    "Kate", "Henry", "Nell",
)
_PLACES = (
    "Paris", "Texas", "Brooklyn", "Chicago", "Berlin", "Vegas", "Mars",
    "Tokyo", "London", "Rome", "Dixie", "Memphis", "Alaska", "Hollywood",
)
# Genre-flavoured (adjectives, nouns), same order as GENRES.
GENRE_WORDS = (
    (("Deadly", "Lethal", "Explosive", "Rogue"),
     ("Fury", "Strike", "Bullet", "Target", "Force", "Mission", "Assault")),
    (("Lost", "Forbidden", "Ancient", "Uncharted"),
     ("Quest", "Treasure", "Journey", "Expedition", "Kingdom", "Voyage")),
    (("Magic", "Tiny", "Happy", "Merry"),
     ("Tale", "Toy", "Dragon", "Bunny", "Rainbow", "Cartoon")),
    (("Little", "Happy", "Big", "Furry"),
     ("Puppy", "Friends", "School", "Giant", "Kids", "Pony")),
    (("Crazy", "Funny", "Dumb", "Wacky"),
     ("Wedding", "Party", "Trouble", "Vacation", "Roommates", "Nerds")),
    (("Dirty", "Crooked", "Cold", "Hard"),
     ("Heist", "Murder", "Gangster", "Cop", "Alibi", "Money", "Mob")),
    (("True", "Real", "Hidden", "Untold"),
     ("Story", "Truth", "Life", "Portrait", "Voices", "Century")),
    (("Quiet", "Tender", "Bitter", "Fragile"),
     ("Heart", "Memory", "Daughter", "Father", "Silence", "Promise", "Winter")),
    (("Enchanted", "Mystic", "Eternal", "Sorcerous"),
     ("Sword", "Wizard", "Realm", "Spell", "Legend", "Unicorn")),
    (("Deadly", "Smoky", "Double", "Midnight"),
     ("Shadow", "Dame", "Rain", "Smoke", "Detour", "Alley")),
    (("Bloody", "Dead", "Evil", "Haunted"),
     ("Blood", "Nightmare", "Haunting", "Curse", "Scream", "Zombie", "Ghoul")),
    (("Singing", "Dancing", "Swinging", "Jazzy"),
     ("Song", "Dance", "Melody", "Broadway", "Rhythm", "Serenade")),
    (("Missing", "Vanishing", "Hidden", "Curious"),
     ("Clue", "Riddle", "Stranger", "Puzzle", "Disappearance", "Case")),
    (("Sweet", "Tender", "Forever", "Lovely"),
     ("Love", "Kiss", "Bride", "Valentine", "Romance", "Sweetheart")),
    (("Cosmic", "Galactic", "Robotic", "Alien"),
     ("Star", "Planet", "Robot", "Galaxy", "Alien", "Future", "Orbit")),
    (("Fatal", "Hunted", "Paranoid", "Sudden"),
     ("Edge", "Fear", "Witness", "Pursuit", "Obsession", "Trap")),
    (("Brave", "Fallen", "Heroic", "Iron"),
     ("Battle", "Soldier", "Front", "Glory", "Platoon", "Victory", "Bunker")),
    (("Dusty", "Lone", "Wild", "Ragged"),
     ("Rider", "Outlaw", "Frontier", "Canyon", "Sheriff", "Gun", "Saddle")),
)

_DEFAULT_CHUNK_ELEMS = 1 << 21  # users-per-chunk * num_items budget
_PILOT_RATINGS = 200_000        # ratings used to calibrate rating thresholds

# SeedSequence stream ids.
_S_CATALOGUE, _S_TITLES, _S_USERS, _S_COUNTS, _S_CHUNK = range(5)


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=stream))


# (num_interactions, num_users, num_items) of ml-100k, ml-1m and ml-10m.
_ANCHORS = np.array([
    [100_000, 943, 1_682],
    [1_000_209, 6_040, 3_706],
    [10_000_054, 69_878, 10_677],
], dtype=np.float64)
# log-log slopes used beyond ml-10m: users linear, catalogue ~N^0.46.
_TAIL_SLOPES = (1.0, 0.46)


def default_sizes(num_interactions: int) -> tuple[int, int]:
    """MovieLens-like (num_users, num_items) for a number of ratings.

    Log-log interpolation through ml-100k (943 x 1,682), ml-1m (6,040 x 3,706)
    and ml-10m (69,878 x 10,677); below 100k the first segment is extended,
    above 10M users grow linearly and items as N^0.46.  Sizes are then nudged
    so that every user can have >= 20 ratings and no user needs more than
    60% of the catalogue.
    """
    n = int(num_interactions)
    x = np.log(n)
    ax = np.log(_ANCHORS[:, 0])
    out = []
    for col, tail in ((1, _TAIL_SLOPES[0]), (2, _TAIL_SLOPES[1])):
        ay = np.log(_ANCHORS[:, col])
        if x <= ax[0]:
            y = ay[0] + (x - ax[0]) * (ay[1] - ay[0]) / (ax[1] - ax[0])
        elif x >= ax[-1]:
            y = ay[-1] + (x - ax[-1]) * tail
        else:
            y = np.interp(x, ax, ay)
        out.append(int(round(float(np.exp(y)))))
    users = max(1, min(out[0], n // MIN_USER_RATINGS))
    items = max(out[1], 50, math.ceil(n / (0.6 * users)) + 1)
    return users, items


# --------------------------------------------------------------------------
# Catalogue / users.
# --------------------------------------------------------------------------
def _gumbel_topk_mask(rng, logw: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Row-wise sampling without replacement: k[r] columns per row of logw."""
    keys = logw - np.log(rng.standard_exponential(logw.shape))
    order = np.argsort(-keys, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(logw.shape[1])[None, :], axis=1)
    return ranks < k[:, None]


def _make_catalogue(seed: int, num_items: int):
    rng = _rng(seed, _S_CATALOGUE)
    ng = len(GENRES)
    n_genres = 1 + rng.choice(len(_NUM_GENRES_P), size=num_items,
                              p=_NUM_GENRES_P)
    logw = np.broadcast_to(np.log(_GENRE_COUNTS / _GENRE_COUNTS.sum()),
                           (num_items, ng))
    genre_mh = _gumbel_topk_mask(rng, logw, n_genres)  # (I, 18) bool
    # Release years 1930..2000, skewed towards the 1990s like ml-1m.
    years = 1930 + np.rint(70 * rng.beta(3.5, 1.0, size=num_items)).astype(int)
    # Popularity rank (0 = most popular), independent of item id.
    pop_rank = rng.permutation(num_items)
    titles = _make_titles(seed, genre_mh, years)
    return genre_mh, years, pop_rank, titles


def _make_titles(seed: int, genre_mh: np.ndarray, years: np.ndarray):
    rng = _rng(seed, _S_TITLES)
    num_items = genre_mh.shape[0]
    titles = []
    seen = set()
    u = rng.random((num_items, 8))
    for i in range(num_items):
        gids = np.flatnonzero(genre_mh[i])
        g = gids[int(u[i, 0] * len(gids))]
        gadj, gnoun = GENRE_WORDS[g]
        r = u[i]

        def pick(words, x):
            return words[min(int(x * len(words)), len(words) - 1)]

        # Each slot is genre-flavoured with probability 0.6.
        adj = pick(gadj, r[2]) if r[1] < 0.6 else pick(_ADJ, r[2])
        noun = pick(gnoun, r[4]) if r[3] < 0.6 else pick(_NOUN, r[4])
        noun2 = pick(gnoun, r[6]) if r[3] >= 0.6 else pick(_NOUN, r[6])
        t = r[5]
        if t < 0.30:
            title = f"The {adj} {noun}"
        elif t < 0.45:
            title = f"{adj} {noun}"
        elif t < 0.58:
            title = f"The {noun} of the {noun2}" if noun != noun2 else f"The {noun}"
        elif t < 0.70:
            title = f"{noun} {noun2}" if noun != noun2 else f"{adj} {noun}s"
        elif t < 0.80:
            title = f"{pick(_NAMES, r[6])}'s {noun}"
        elif t < 0.90:
            title = f"{adj} {noun} in {pick(_PLACES, r[6])}"
        else:
            title = f"{noun}"
        if r[7] < 0.04:
            title += (" II", " III", " 2")[int(r[7] / 0.04 * 3) % 3]
        full = f"{title} ({years[i]})"
        if full in seen:  # keep (title, year) unique; ml-1m titles are unique
            n = 2
            while f"{title} {n} ({years[i]})" in seen:
                n += 1
            full = f"{title} {n} ({years[i]})"
        seen.add(full)
        titles.append(full)
    return titles


def _make_users(seed: int, num_users: int):
    rng = _rng(seed, _S_USERS)
    gender = (rng.random(num_users) >= _P_MALE).astype(np.int64)  # 0=M, 1=F
    age_idx = rng.choice(len(AGE_CODES), size=num_users, p=_AGE_P / _AGE_P.sum())
    occ = rng.choice(len(_OCC_P), size=num_users, p=_OCC_P / _OCC_P.sum())
    zips = rng.integers(0, 100_000, size=num_users)
    return gender, age_idx, occ, zips


def _user_counts(seed, num_users, num_interactions, cap, sigma):
    """Heavy-tailed per-user counts >= 20, <= cap, summing exactly to N."""
    rng = _rng(seed, _S_COUNTS)
    extra_total = num_interactions - num_users * MIN_USER_RATINGS
    cap_extra = cap - MIN_USER_RATINGS
    x = rng.lognormal(0.0, sigma, size=num_users)
    if extra_total == 0:
        return np.full(num_users, MIN_USER_RATINGS, dtype=np.int64)
    # Water-filling: find c with sum(min(c*x, cap_extra)) == extra_total.
    lo, hi = 0.0, cap_extra / x.min() + 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if np.minimum(mid * x, cap_extra).sum() < extra_total:
            lo = mid
        else:
            hi = mid
    alloc = np.minimum(hi * x, cap_extra)
    base = np.floor(alloc).astype(np.int64)
    rem = extra_total - int(base.sum())
    if rem > 0:
        frac = np.where(base < cap_extra, alloc - base, -1.0)
        idx = np.argsort(-frac, kind="stable")[:rem]
        base[idx] += 1
    elif rem < 0:  # numerical slack from `hi` overshooting
        frac = np.where(base > 0, alloc - base, 2.0)
        idx = np.argsort(frac, kind="stable")[:-rem]
        base[idx] -= 1
    counts = base + MIN_USER_RATINGS
    assert counts.sum() == num_interactions and counts.max() <= cap
    return counts


# --------------------------------------------------------------------------
# Latent model.
# --------------------------------------------------------------------------
_KNOB_DEFAULTS = dict(
    dim=16,
    zipf_alpha=0.9,
    zipf_offset=0.03,
    tail_decay=3.5,
    selection_gamma=1.0,
    count_sigma=1.15,
    max_user_fraction=0.6,
    genre_scale=0.75,
    factor_scale=0.7,
    noise_scale=0.75,
    order_noise=1.0,
)


def latent_model(seed: int, num_users: int, num_items: int, **knobs) -> dict:
    """The seeded ground truth behind `generate` (for tests and analysis).

    Arrays are indexed by 0-based ids (file id - 1).  ``affinity(model, u, i)``
    gives the user-item affinity that drives both selection and ratings; the
    latent rating score is ``b_user[u] + b_item[i] + affinity + noise``.
    """
    kn = {**_KNOB_DEFAULTS, **knobs}
    U, I, dim, ng = int(num_users), int(num_items), int(kn["dim"]), len(GENRES)

    # Catalogue and item-side latents.
    genre_mh, years, pop_rank, titles = _make_catalogue(seed, I)
    rng = _rng(seed, _S_CATALOGUE, 1)
    g_norm = genre_mh / genre_mh.sum(1, keepdims=True)          # (I, 18)
    genre_emb = rng.standard_normal((ng, dim))
    v = 0.6 * (g_norm @ genre_emb) + 0.8 * rng.standard_normal((I, dim))
    v /= np.sqrt((v ** 2).sum(1, keepdims=True) / dim)           # rms 1
    # Zipf-Mandelbrot popularity (flattened head) with an exponential cut-off
    # that leaves a cold tail of rarely rated movies, as in MovieLens.
    r0 = max(1.0, kn["zipf_offset"] * I)
    logpop = (-kn["zipf_alpha"] * np.log(pop_rank + r0)
              - kn["tail_decay"] * pop_rank / I)
    zpop = (logpop - logpop.mean()) / (logpop.std() + 1e-9)
    b_item = 0.25 * zpop + 0.45 * rng.standard_normal(I)
    v_dir = v / np.linalg.norm(v, axis=1, keepdims=True)
    # Primary genre of each item (one of its genres, uniformly).
    primary = np.argmax(genre_mh * rng.random(genre_mh.shape), axis=1)

    # Users and user-side latents.
    gender, age_idx, occ, zips = _make_users(seed, U)
    rng = _rng(seed, _S_USERS, 1)
    gender_eff = 0.5 * rng.standard_normal((2, ng))
    age_eff = 0.4 * rng.standard_normal((len(AGE_CODES), ng))
    # Genre taste: mostly individual, shifted by gender and age group.
    p = rng.standard_normal((U, ng)) + gender_eff[gender] + age_eff[age_idx]
    # Scale so that std(p_u . g_i) ~= genre_scale.
    p *= kn["genre_scale"] / np.sqrt(p.var() * np.mean((g_norm ** 2).sum(1)))
    q = kn["factor_scale"] * rng.standard_normal((U, dim)) / np.sqrt(dim)
    b_user = 0.45 * rng.standard_normal(U)
    drift_dir = rng.standard_normal((U, dim))
    drift_dir /= np.linalg.norm(drift_dir, axis=1, keepdims=True)
    # Genre "phases": each user goes through genres in their own random order.
    phase = np.argsort(rng.random((U, ng)), axis=1).astype(np.float64)
    # Sessions: most users rate everything in one sitting (ml-100k: median
    # span ~1 hour), a minority come back over weeks or months.
    session_p = rng.beta(0.25, 10.0, size=U)
    session_gap = np.exp(rng.normal(np.log(14 * 86400), 1.5, size=U))
    start_u = rng.beta(0.7, 2.0, size=U)

    return dict(
        knobs=kn, genre_mh=genre_mh, years=years, pop_rank=pop_rank,
        titles=titles, v=v, v_dir=v_dir, logpop=logpop, b_item=b_item,
        gender=gender, age_idx=age_idx, occ=occ, zips=zips, p=p, q=q,
        b_user=b_user, drift_dir=drift_dir, phase=phase, primary=primary,
        session_p=session_p,
        session_gap=session_gap, start_u=start_u,
        # Affinity a_ui = user_mat[u] . item_mat[:, i] = q.v + p.g_norm.
        user_mat=np.concatenate([q, p], axis=1).astype(np.float32),
        item_mat=np.concatenate([v, g_norm], axis=1).astype(np.float32).T,
    )


def affinity(model: dict, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Affinity q_u.v_i + p_u.g_i for paired 0-based (users, items)."""
    return np.einsum("nd,dn->n", model["user_mat"][users],
                     model["item_mat"][:, items])


# --------------------------------------------------------------------------
# Main generator.
# --------------------------------------------------------------------------
def generate(
    out_dir: str,
    num_interactions: int,
    seed: int = 0,
    num_users: Optional[int] = None,
    num_items: Optional[int] = None,
    *,
    chunk_elems: int = _DEFAULT_CHUNK_ELEMS,
    **knobs,
) -> dict:
    """Writes ratings.dat / movies.dat / users.dat (ml-1m layout) to out_dir.

    Args:
        out_dir: output directory (created if missing; files overwritten).
        num_interactions: exact number of ratings to write.
        seed: RNG seed; output is byte-identical for a given seed and
            arguments (and numpy version).
        num_users, num_items: sizes; default to MovieLens proportions
            (see `default_sizes`).  Needs num_interactions >= 20 * num_users
            and num_interactions <= num_users * max_user_fraction * num_items.
        chunk_elems: memory knob, users-per-chunk * num_items (the output
            depends on it, so keep the default for reproducible files).
        **knobs: model knobs (defaults in `_KNOB_DEFAULTS`):
            dim: latent factor dimension.
            zipf_alpha: popularity exponent (log-weight = -alpha * log rank).
            selection_gamma: how strongly affinity drives which items a user
                rates (0 = popularity only).
            count_sigma: lognormal sigma of per-user counts (tail heaviness).
            max_user_fraction: cap on a user's count, as a catalogue fraction.
            genre_scale, factor_scale, noise_scale: std of the genre-taste
                term, the collaborative term and the rating noise (latent
                rating units; the discretisation to 1..5 is by quantile).
            order_noise: jitter (in genre-phase steps) on the ordering of a
                user's history; larger = less sequential structure.

    Returns:
        A small dict of statistics.
    """
    t0, cpu0 = time.perf_counter(), time.process_time()
    unknown = set(knobs) - set(_KNOB_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown generate() arguments: {sorted(unknown)}")
    kn = {**_KNOB_DEFAULTS, **knobs}
    n = int(num_interactions)
    if n < MIN_USER_RATINGS:
        raise ValueError(f"num_interactions must be >= {MIN_USER_RATINGS}")
    du, di = default_sizes(n)
    U = int(num_users) if num_users is not None else du
    if num_items is not None:
        I = int(num_items)
    else:  # make room for the requested users' histories
        I = max(di, math.ceil(n / (kn["max_user_fraction"] * max(U, 1))) + 1)
    cap = min(I, max(MIN_USER_RATINGS, int(kn["max_user_fraction"] * I)))
    if U < 1 or I < MIN_USER_RATINGS:
        raise ValueError(f"need num_users >= 1 and num_items >= "
                         f"{MIN_USER_RATINGS}, got {U}, {I}")
    if n < U * MIN_USER_RATINGS:
        raise ValueError(f"{n} interactions cannot give {U} users "
                         f">= {MIN_USER_RATINGS} ratings each")
    if n > U * cap:
        raise ValueError(f"{n} interactions exceed capacity {U} users x {cap} "
                         f"items per user; raise num_users/num_items")
    os.makedirs(out_dir, exist_ok=True)

    m = latent_model(seed, U, I, **kn)
    counts = _user_counts(seed, U, n, cap, kn["count_sigma"])
    logpop32 = m["logpop"].astype(np.float32)

    rows_per_chunk = max(1, int(chunk_elems) // I)
    thresholds = None
    pending = []
    rating_hist = np.zeros(5, dtype=np.int64)
    item_counts = np.zeros(I, dtype=np.int64)
    t_min, t_max = np.iinfo(np.int64).max, 0

    ratings_path = os.path.join(out_dir, "ratings.dat")
    with open(ratings_path, "wb") as f:

        def flush(chunk):
            nonlocal t_min, t_max
            u_ids, i_ids, score, ts = chunk
            r = 1 + np.searchsorted(thresholds, score).astype(np.int64)
            rating_hist[:] += np.bincount(r - 1, minlength=5)
            t_min = min(t_min, int(ts.min()))
            t_max = max(t_max, int(ts.max()))
            f.write(_format_lines(u_ids + 1, i_ids + 1, r, ts))

        for c, a in enumerate(range(0, U, rows_per_chunk)):
            b = min(U, a + rows_per_chunk)
            chunk = _gen_chunk(_rng(seed, _S_CHUNK, c), a, b, counts, m,
                               logpop32)
            item_counts[:] += np.bincount(chunk[1], minlength=I)
            if thresholds is None:
                pending.append(chunk)
                if sum(len(ch[2]) for ch in pending) >= _PILOT_RATINGS or b == U:
                    s = np.concatenate([ch[2] for ch in pending])
                    thresholds = np.quantile(s, np.cumsum(RATING_P)[:-1])
                    for ch in pending:
                        flush(ch)
                    pending = []
            else:
                flush(chunk)

    # ---- movies.dat / users.dat.
    with open(os.path.join(out_dir, "movies.dat"), "wb") as f:
        gnames = np.array(GENRES, dtype=object)
        titles, genre_mh = m["titles"], m["genre_mh"]
        lines = [
            f"{i + 1}::{titles[i]}::{'|'.join(gnames[genre_mh[i]])}\n"
            for i in range(I)
        ]
        f.write("".join(lines).encode("latin-1"))
    with open(os.path.join(out_dir, "users.dat"), "wb") as f:
        gch = ("M", "F")
        gender, age_idx, occ, zips = m["gender"], m["age_idx"], m["occ"], m["zips"]
        lines = [
            f"{u + 1}::{gch[gender[u]]}::{AGE_CODES[age_idx[u]]}::{occ[u]}::"
            f"{zips[u]:05d}\n" for u in range(U)
        ]
        f.write("".join(lines).encode("latin-1"))

    srt = np.sort(item_counts)[::-1]
    top20 = srt[: max(1, int(round(0.2 * I)))].sum() / n
    stats = {
        "out_dir": out_dir,
        "seed": int(seed),
        "num_interactions": n,
        "num_users": U,
        "num_items": I,
        "num_rated_items": int((item_counts > 0).sum()),
        "density": n / (U * I),
        "user_count_min": int(counts.min()),
        "user_count_median": float(np.median(counts)),
        "user_count_max": int(counts.max()),
        "top20pct_item_share": float(top20),
        "rating_hist": [int(x) for x in rating_hist],
        "mean_rating": float((rating_hist * np.arange(1, 6)).sum() / n),
        "time_range": [int(t_min), int(t_max)],
        "bytes": {
            name: os.path.getsize(os.path.join(out_dir, name))
            for name in ("ratings.dat", "movies.dat", "users.dat")
        },
        "seconds": round(time.perf_counter() - t0, 3),
        # Process CPU time: on a shared machine, wall time says more about the load.
        "cpu_seconds": round(time.process_time() - cpu0, 3),
    }
    return stats


def _gen_chunk(rng, a, b, counts, m, logpop32):
    """Interactions of users [a, b): (user0, item0, latent score, timestamp)."""
    kn = m["knobs"]
    k = counts[a:b]
    rows = b - a
    aff = m["user_mat"][a:b] @ m["item_mat"]                      # (rows, I)
    # Gumbel top-k: keys = log-weight + Gumbel noise (= -log Exp(1)).
    keys = aff * np.float32(kn["selection_gamma"])
    keys += logpop32
    e = rng.standard_exponential(aff.shape, dtype=np.float32)
    np.maximum(e, np.float32(1e-30), out=e)  # float32 draws can be 0.0
    keys -= np.log(e, out=e)
    del e
    items = np.concatenate([_top_k_row(keys[r], int(k[r])) for r in range(rows)])
    ru = np.repeat(np.arange(rows), k)                            # row-major
    del keys
    users = ru + a
    score = (m["b_user"][users] + m["b_item"][items]
             + aff[ru, items].astype(np.float64)
             + kn["noise_scale"] * rng.standard_normal(len(items)))
    del aff

    # Order each user's history: genre phases (user-specific order of the
    # items' primary genres), jittered, plus a smooth drift in factor space.
    proj = np.einsum("nd,nd->n", m["v_dir"][items], m["drift_dir"][users])
    order_key = (m["phase"][users, m["primary"][items]] + 0.5 * proj / 0.25
                 + kn["order_noise"] * rng.standard_normal(len(proj)))
    order = np.lexsort((order_key, ru))
    items = items[order]
    score = score[order]

    # Timestamps: sessions of quick ratings (half the gaps 0 s, as with
    # ml-100k's batch submissions) separated by multi-day gaps.
    n = len(items)
    new_session = rng.random(n) < m["session_p"][users]
    gaps = np.where(new_session,
                    rng.exponential(1.0, n) * m["session_gap"][users],
                    rng.exponential(40.0, n) * (rng.random(n) < 0.5))
    offs = np.concatenate([[0], np.cumsum(k)])
    gaps[offs[:-1]] = 0.0
    cum = np.cumsum(gaps)
    cum -= np.repeat(cum[offs[:-1]], k)
    span = cum[offs[1:] - 1]
    window = float(T_END - T_START)
    squeeze = np.minimum(1.0, window / np.maximum(span, 1.0))
    cum *= np.repeat(squeeze, k)
    span = span * squeeze
    start = T_START + m["start_u"][a:b] * (window - span)
    ts = np.floor(np.repeat(start, k) + cum).astype(np.int64)
    ts = np.minimum(ts, T_END)
    return users, items, score, ts


def _top_k_row(keys: np.ndarray, k: int) -> np.ndarray:
    """Sorted column ids of the k largest keys of one row.

    The k-th largest key comes from a partial sort (O(n), where sorting the
    whole row cost most of the generator's time at 10M); the ids are those at
    or above it. Float32 ties at the threshold (rare) fall back to a stable
    argsort, so the result equals the full sort's.
    """
    n = keys.shape[0]
    threshold = np.partition(keys, n - k)[n - k]
    top = np.flatnonzero(keys >= threshold)
    if len(top) != k:
        top = np.sort(np.argsort(-keys, kind="stable")[:k])
    return top


def _format_lines(u, i, r, t) -> bytes:
    """``u::i::r::t\n`` lines of non-negative integer columns, built in numpy.

    Byte for byte what ``"{}::{}::{}::{}\n".format`` writes, without a Python
    string per line (that took longer than the rest of the generator at 10M):
    every number is written right-aligned in a fixed-width byte block, then
    the leading padding is dropped by one boolean selection.
    """
    cols = [np.asarray(c, np.int64) for c in (u, i, r, t)]
    n = len(cols[0])
    blocks, keep = [], []
    for c, col in enumerate(cols):
        width = _num_digits(col)
        w = int(width.max()) if n else 1
        digits = np.empty((n, w), np.uint8)
        value = col.copy()
        for d in range(w):  # the last digit first
            digits[:, w - 1 - d] = 48 + value % 10
            value //= 10
        blocks.append(digits)
        keep.append(np.arange(w)[None, :] >= (w - width)[:, None])
        sep = np.frombuffer(b"::" if c < 3 else b"\n", np.uint8)
        blocks.append(np.broadcast_to(sep, (n, len(sep))))
        keep.append(np.ones((n, len(sep)), bool))
    return np.concatenate(blocks, axis=1)[np.concatenate(keep, axis=1)].tobytes()


def _num_digits(x: np.ndarray) -> np.ndarray:
    """Decimal digits of non-negative integers (1 for 0)."""
    if len(x) and x.min() < 0:
        raise ValueError("negative value in a ratings column")
    digits = np.ones(len(x), np.int64)
    bound = 10
    while len(x) and bound <= x.max():
        digits += x >= bound
        bound *= 10
    return digits


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Write a synthetic MovieLens dataset in ml-1m layout.")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--num_interactions", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num_users", type=int, default=None)
    ap.add_argument("--num_items", type=int, default=None)
    args = ap.parse_args(argv)
    stats = generate(args.out, args.num_interactions, seed=args.seed,
                     num_users=args.num_users, num_items=args.num_items)
    print(json.dumps(stats, indent=2))


if __name__ == "__main__":
    main()
