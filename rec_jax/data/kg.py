"""The knowledge-graph view of items: Freebase triples linked to MovieLens items.

RecBole's copy of ml-100k ships two more atomic files beside the ratings:

* ``ml-100k.kg``: ``head_id``, ``relation_id``, ``tail_id`` (91,631 triples:
  actors, directors, writers, producers, genres, awards, language, country,
  content rating, sequels, ...), every relation present in both directions
  (``film.film.directed_by`` and ``film.director.film``);
* ``ml-100k.link``: ``item_id``, ``entity_id`` (1,599 of the 1,682 items).

Each item becomes the set of entities one triple away from its film entity,
each with the relation that joins them, seen from the film
(``film.film.actor``; a relation that only exists pointing at the film is
read backwards and written ``~relation``). Only entities that at least
``min_items`` items share are kept: an entity of one item identifies that
item like its ID does, and for an item never seen in training it would be an
embedding nothing ever trained. Shared entities are the path by which a new
film reaches the users of the films it shares a director or actors with.

**Which ids the link file uses.** RecBole's ``ml-100k.link`` is keyed by
*MovieLens-1M* movie ids, not ml-100k's (item 1, Toy Story, has the same id in
both and links right; ml-100k's 150, 508 and 539 are ML-1M's Apollo 13,
Philadelphia and Sleepless in Seattle, and carry Tom Hanks; also reported as
RUCAIBox/RecSysDatasets#130). Read as is, the graph joins unrelated films:
:func:`alignment` measures it (KG neighbours are co-rated no more than
random pairs). ``link_movies`` (config.data.kg_link_movies) names the
GroupLens ``movies.dat`` whose ids the link uses; its items are then matched
to the dataset's by title and year (:func:`remap_links`).

Plain Python and numpy (no TensorFlow): the arrays are also written to
``kg.npz`` beside the prepared dataset so a machine without the raw files
(``config.data.prepared``) reads them as is.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re

import numpy as np

from rec_jax import console, errors
from rec_jax.data import raw

KG_VERSION = 2


@dataclasses.dataclass
class ItemGraph:
    """Items as padded lists of (entity, relation) codes.

    Attributes:
      item_entity: [num_items, max_entities] int32 entity codes, -1 = padding.
      item_relation: [num_items, max_entities] int32 relation codes, -1 = padding.
      entities: [num_entities] original entity ids (str).
      relations: [num_relations] relation names (str; "~r" read backwards).
      linked: [num_items] bool: the item has a film entity in the link file.
      min_items: the sharing threshold the entities were kept with.
    """

    item_entity: np.ndarray
    item_relation: np.ndarray
    entities: np.ndarray
    relations: np.ndarray
    linked: np.ndarray
    min_items: int = 2

    @property
    def num_entities(self) -> int:
        return len(self.entities)

    @property
    def num_relations(self) -> int:
        return len(self.relations)

    def entity_counts(self) -> np.ndarray:
        """[num_items] how many kept entities each item has."""
        return (self.item_entity >= 0).sum(1)

    def describe(self) -> str:
        counts = self.entity_counts()
        return (f"knowledge graph: {self.linked.sum():,} of {len(self.linked):,} items linked, "
                f"{self.num_entities:,} shared entities, {self.num_relations} relations, "
                f"{counts.mean():.1f} entities per item (max {counts.max()}), "
                f"{(counts == 0).sum():,} items without any")

    def save(self, path: str) -> None:
        tmp = path + ".tmp.npz"
        np.savez(tmp, version=np.array(KG_VERSION),
                 **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> "ItemGraph":
        with np.load(path, allow_pickle=False) as f:
            if int(f["version"]) != KG_VERSION:
                raise errors.StaleInputError(f"{path}: knowledge-graph version {int(f['version'])},"
                                             f" this code reads {KG_VERSION}; delete the file")
            values = {k.name: f[k.name] for k in dataclasses.fields(cls)}
        values["min_items"] = int(values["min_items"])
        return cls(**values)


def find_files(kg_dir: str) -> tuple[str, str]:
    """The (``*.kg``, ``*.link``) files of a folder, or a MissingInputError."""
    if not os.path.isdir(kg_dir):
        raise errors.MissingInputError(f"knowledge-graph folder not found: {kg_dir}")
    names = sorted(os.listdir(kg_dir))
    kg = [n for n in names if n.endswith(".kg")]
    link = [n for n in names if n.endswith(".link")]
    if not kg or not link:
        raise errors.MissingInputError(
            f"{kg_dir} has no knowledge graph: expected RecBole atomic files *.kg (head_id, "
            "relation_id, tail_id) and *.link (item_id, entity_id); set config.data.kg_dir")
    return os.path.join(kg_dir, kg[0]), os.path.join(kg_dir, link[0])


def read_triples(path: str) -> list[tuple[str, str, str]]:
    """(head, relation, tail) rows of a ``.kg`` atomic file; a malformed row is a
    DataFormatError naming the file, line and field."""
    triples = []
    for n, row in raw.atomic_rows(path, ("head_id", "relation_id", "tail_id")):
        triples.append(tuple(raw.token(path, n, f, row[f])
                             for f in ("head_id", "relation_id", "tail_id")))
    return triples


def read_links(path: str, known_items: set[str] | None) -> dict[str, str]:
    """{item id: entity id} of a ``.link`` file. An item linked twice, or one the
    dataset does not have (known_items; None: not checked), is a DataFormatError
    naming the line."""
    links: dict[str, str] = {}
    for n, row in raw.atomic_rows(path, ("item_id", "entity_id")):
        item = raw.token(path, n, "item_id", row["item_id"])
        entity = raw.token(path, n, "entity_id", row["entity_id"])
        if item in links:
            raise raw.DataFormatError(path, n, "item_id", f"item {item!r} is linked twice")
        if known_items is not None and item not in known_items:
            raise raw.DataFormatError(path, n, "item_id",
                                      f"item {item!r} is not in the dataset's item file")
        links[item] = entity
    return links


def build(item_ids: np.ndarray, triples, links: dict[str, str], min_items: int = 2,
          max_entities: int = 64) -> ItemGraph:
    """The padded item -> (entity, relation) lists.

    Args:
      item_ids: [num_items] the dataset's original item ids, in row order.
      triples: (head, relation, tail) entity triples.
      links: item id -> its film entity.
      min_items: keep entities shared by at least this many items.
      max_entities: at most this many entities per item (the most shared
        first: they carry the most signal between items).
    """
    film_of = {links[i]: row for row, i in enumerate(item_ids) if i in links}
    neighbours: list[dict[str, str]] = [dict() for _ in item_ids]  # entity -> relation
    for head, relation, tail in triples:
        if head in film_of:
            # Forward relations win: a pair seen both ways keeps the film's view.
            neighbours[film_of[head]][tail] = relation
    for head, relation, tail in triples:
        if tail in film_of and head not in neighbours[film_of[tail]]:
            neighbours[film_of[tail]][head] = "~" + relation
    shared = collections.Counter(e for n in neighbours for e in n)
    # Each item keeps its most shared entities (at most max_entities); an entity
    # that truncation leaves on fewer than min_items items is dropped after it.
    kept = [sorted((e for e in n if shared[e] >= min_items), key=lambda e: (-shared[e], e))
            [:max_entities] for n in neighbours]
    final = collections.Counter(e for k in kept for e in k)
    kept = [[e for e in k if final[e] >= min_items] for k in kept]
    entities = sorted({e for k in kept for e in k})
    entity_code = {e: c for c, e in enumerate(entities)}
    relations = sorted({neighbours[row][e] for row, k in enumerate(kept) for e in k})
    relation_code = {r: c for c, r in enumerate(relations)}
    width = max(1, max((len(k) for k in kept), default=1))
    item_entity = np.full((len(item_ids), width), -1, np.int32)
    item_relation = np.full((len(item_ids), width), -1, np.int32)
    for row, k in enumerate(kept):
        item_entity[row, :len(k)] = [entity_code[e] for e in k]
        item_relation[row, :len(k)] = [relation_code[neighbours[row][e]] for e in k]
    linked = np.array([i in links for i in item_ids], np.bool_)
    return ItemGraph(item_entity, item_relation, np.array(entities, dtype=str),
                     np.array(relations, dtype=str), linked, int(min_items))


def _title_key(title: str, year: int) -> tuple[str, int]:
    """A title normalised for matching across MovieLens releases (case, spacing,
    punctuation), with its year."""
    return (re.sub(r"[^a-z0-9]+", " ", title.lower()).strip(), int(year))


def remap_links(links: dict[str, str], movies_path: str, item_ids: np.ndarray,
                item_title: np.ndarray, item_year: np.ndarray) -> tuple[dict[str, str], int]:
    """Links keyed by another release's movie ids, re-keyed by this dataset's item ids.

    Args:
      links: {other release's movie id: entity}.
      movies_path: that release's GroupLens ``movies.dat`` (id::title (year)::genres).
      item_ids, item_title, item_year: this dataset's items.

    Returns:
      ({this dataset's item id: entity}, number of link rows without a match).
    """
    other = {}
    for n, line in raw.lines(movies_path, "latin-1"):
        movie, title, _ = raw.split_fields(movies_path, n, line, "::", ("movie_id", "title",
                                                                         "genres"))
        name, year = raw.title_and_year(title)
        other[raw.token(movies_path, n, "movie_id", movie)] = _title_key(name, year)
    ours = {_title_key(t, y): i for i, t, y in zip(item_ids, item_title, item_year)}
    remapped, missed = {}, 0
    for movie, entity in links.items():
        item = ours.get(other.get(movie, ("", -1)))
        if item is None:
            missed += 1
        else:
            remapped[item] = entity
    return remapped, missed


def alignment(graph: ItemGraph, train_user: np.ndarray, train_item: np.ndarray,
              seed: int = 0) -> float:
    """How much more often an item and its nearest KG neighbour are co-rated than an
    item and a random one (training pairs; 1.0 = the graph says nothing about taste).

    The neighbour is the linked item with the largest overlap of IDF-weighted
    entities. A link file keyed by other ids (see the module docstring) gives
    about 1.0; a right one, well above (films that share a director or cast
    share an audience).
    """
    num_items = len(graph.linked)
    x = np.zeros((num_items, graph.num_entities), np.float32)
    rows, slots = np.nonzero(graph.item_entity >= 0)
    x[rows, graph.item_entity[rows, slots]] = 1.0
    idf = np.log((1.0 + num_items) / (1.0 + x.sum(0)))
    sim = (x * idf) @ (x * idf).T
    np.fill_diagonal(sim, -1.0)
    items = np.flatnonzero(graph.entity_counts() > 0)
    if len(items) < 2:
        return float("nan")
    sim[:, np.setdiff1d(np.arange(num_items), items)] = -1.0
    neighbour = sim[items].argmax(1)
    random = np.random.default_rng(seed).choice(items, len(items))
    num_users = int(train_user.max()) + 1 if len(train_user) else 1
    rated = np.zeros((num_items, num_users), np.float32)
    rated[train_item, train_user] = 1.0
    norm = np.sqrt(rated.sum(1)) + 1e-9

    def co_rating(a, b):
        return float(((rated[a] * rated[b]).sum(1) / (norm[a] * norm[b])).mean())
    return co_rating(items, neighbour) / max(co_rating(items, random), 1e-12)


def default_dir(variant: str, source_dir: str | None) -> str:
    """Where the KG files are unless config.data.kg_dir says: the source folder when
    it has them, else (ml-100k) the recbole wheel's copy, linked by the same ids."""
    if source_dir:
        names = os.listdir(source_dir) if os.path.isdir(source_dir) else []
        if any(n.endswith(".kg") for n in names):
            return source_dir
    if variant == "100k":
        return raw.recbole_ml100k_dir()
    raise errors.MissingInputError(
        f"no knowledge graph for ml-{variant}: set config.data.kg_dir to a folder with "
        "RecBole atomic *.kg and *.link files")


def load(item_ids: np.ndarray, kg_dir: str, cache_path: str | None = None,
         min_items: int = 2, max_entities: int = 64, link_movies: str = "",
         item_title: np.ndarray | None = None, item_year: np.ndarray | None = None) -> ItemGraph:
    """Reads (or, when `cache_path` exists with the same settings, reloads) the item graph.

    cache_path: an ``kg.npz`` to write beside the prepared dataset (None: no cache).
    link_movies: the ``movies.dat`` whose ids the link file uses ("" = this
      dataset's own ids); then item_title and item_year are needed to match.
    """
    if cache_path and os.path.exists(cache_path):
        try:
            graph = ItemGraph.load(cache_path)
        except errors.StaleInputError:  # written by older code: rebuilt below
            graph = None
        if (graph is not None and len(graph.linked) == len(item_ids)
                and graph.min_items == min_items and graph.item_entity.shape[1] <= max_entities):
            return graph
    kg_path, link_path = find_files(kg_dir)
    if link_movies:
        links = read_links(link_path, None)
        links, missed = remap_links(links, link_movies, item_ids, item_title, item_year)
        console.say(f"{link_path}: {len(links):,} links matched to this dataset's items by "
                    f"title and year through {link_movies} ({missed:,} without a match)")
    else:
        links = read_links(link_path, set(item_ids.tolist()))
    graph = build(item_ids, read_triples(kg_path), links, min_items, max_entities)
    if cache_path:
        graph.save(cache_path)
    return graph
