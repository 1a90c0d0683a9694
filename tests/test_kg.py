"""The knowledge-graph reader (rec_jax/data/kg.py): hand-made graphs and bad rows."""

import os

import numpy as np
import pytest

from rec_jax import errors
from rec_jax.data import kg, raw

KG_HEADER = "head_id:token\trelation_id:token\ttail_id:token\n"
LINK_HEADER = "item_id:token\tentity_id:token\n"

# Films f1..f4 are items 10, 20, 30, 40 (item 50 has no link). Director d1
# directs f1 and f2 (stored both ways); actor a1 plays in f1, f2 and f3 (only
# film -> actor rows); a2 only in f4 (one item: dropped); genre g1 reaches
# f3 and f4 only through rows that point at the film.
TRIPLES = [
    ("f1", "film.film.directed_by", "d1"), ("d1", "film.director.film", "f1"),
    ("f2", "film.film.directed_by", "d1"), ("d1", "film.director.film", "f2"),
    ("f1", "film.film.actor", "a1"), ("f2", "film.film.actor", "a1"),
    ("f3", "film.film.actor", "a1"), ("f4", "film.film.actor", "a2"),
    ("g1", "film.film_genre.films_in_this_genre", "f3"),
    ("g1", "film.film_genre.films_in_this_genre", "f4"),
]
LINKS = {"10": "f1", "20": "f2", "30": "f3", "40": "f4"}
ITEMS = np.array(["10", "20", "30", "40", "50"])


def _write(folder, triples=TRIPLES, links=LINKS, kg_text=None, link_text=None):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "toy.kg"), "w") as f:
        f.write(kg_text if kg_text is not None
                else KG_HEADER + "".join("\t".join(t) + "\n" for t in triples))
    with open(os.path.join(folder, "toy.link"), "w") as f:
        f.write(link_text if link_text is not None
                else LINK_HEADER + "".join(f"{i}\t{e}\n" for i, e in links.items()))
    return str(folder)


def _entities(graph, row):
    codes = graph.item_entity[row]
    rels = graph.item_relation[row]
    return {(str(graph.entities[e]), str(graph.relations[r])) for e, r in zip(codes, rels)
            if e >= 0}


def test_items_get_the_entities_they_share_with_the_relation_seen_from_the_film(tmp_path):
    graph = kg.load(ITEMS, _write(tmp_path / "kg"))
    # a2 belongs to one item only: it would be an ID in disguise, so it is dropped.
    assert set(graph.entities) == {"a1", "d1", "g1"}
    assert _entities(graph, 0) == {("d1", "film.film.directed_by"), ("a1", "film.film.actor")}
    assert _entities(graph, 1) == {("d1", "film.film.directed_by"), ("a1", "film.film.actor")}
    # The genre exists only pointing at the film: read backwards, marked "~".
    assert _entities(graph, 2) == {("a1", "film.film.actor"),
                                   ("g1", "~film.film_genre.films_in_this_genre")}
    assert _entities(graph, 3) == {("g1", "~film.film_genre.films_in_this_genre")}
    assert _entities(graph, 4) == set()  # item 50 has no link
    np.testing.assert_array_equal(graph.linked, [True, True, True, True, False])
    np.testing.assert_array_equal(graph.entity_counts(), [2, 2, 2, 1, 0])
    # Padding is -1 in both arrays, at the same slots.
    np.testing.assert_array_equal(graph.item_entity < 0, graph.item_relation < 0)
    assert "4 of 5 items linked" in graph.describe()


def test_min_items_and_max_entities(tmp_path):
    folder = _write(tmp_path / "kg")
    everything = kg.load(ITEMS, folder, min_items=1)
    assert "a2" in set(everything.entities)
    # At most one entity per item: the most shared one first (a1: 3 items, d1: 2).
    one = kg.load(ITEMS, folder, max_entities=1)
    assert one.item_entity.shape == (5, 1)
    assert _entities(one, 0) == {("a1", "film.film.actor")}


def test_the_cache_is_reused_and_the_settings_are_checked(tmp_path):
    folder = _write(tmp_path / "kg")
    cache = str(tmp_path / "kg.npz")
    first = kg.load(ITEMS, folder, cache)
    assert os.path.exists(cache)
    os.remove(os.path.join(folder, "toy.kg"))  # the cache alone suffices now
    again = kg.load(ITEMS, folder, cache)
    np.testing.assert_array_equal(first.item_entity, again.item_entity)
    with pytest.raises(errors.MissingInputError):  # other settings need the files again
        kg.load(ITEMS, folder, cache, min_items=1)


def test_the_recbole_wheel_graph_covers_ml100k(ml100k):
    graph = kg.load(ml100k.item_ids, kg.default_dir("100k", None))
    assert graph.linked.sum() == 1598  # the .link file's rows
    assert graph.num_relations >= 10 and graph.num_entities > 1000
    # Shared entities only: every kept entity is carried by at least two items.
    counts = np.bincount(graph.item_entity[graph.item_entity >= 0], minlength=graph.num_entities)
    assert counts.min() >= 2


# Malformed files: a DataFormatError names the file, the line and the field.


@pytest.mark.parametrize("kg_text, line, field", [
    (KG_HEADER + "f1\tfilm.film.actor\n", 2, "tail_id"),  # a missing column
    (KG_HEADER + "f1\tfilm.film.actor\ta1\textra\n", 2, "tail_id"),  # one too many
    (KG_HEADER + "f1\tfilm.film.actor\ta1\n \tfilm.film.actor\ta1\n", 3, "head_id"),  # empty id
    ("head_id:token\ttail_id:token\nf1\ta1\n", 1, "relation_id"),  # header lacks a column
])
def test_malformed_kg_rows(tmp_path, kg_text, line, field):
    folder = _write(tmp_path / "kg", kg_text=kg_text)
    with pytest.raises(raw.DataFormatError) as info:
        kg.load(ITEMS, folder)
    assert (info.value.line, info.value.field) == (line, field)
    assert info.value.path.endswith("toy.kg")
    assert f"line {line}, field '{field}'" in str(info.value)


@pytest.mark.parametrize("link_text, line, message", [
    (LINK_HEADER + "10\tf1\n10\tf2\n", 3, "linked twice"),
    (LINK_HEADER + "10\tf1\n99\tf2\n", 3, "not in the dataset"),
    (LINK_HEADER + "10\n", 2, "expected 2 columns"),
])
def test_malformed_link_rows(tmp_path, link_text, line, message):
    folder = _write(tmp_path / "kg", link_text=link_text)
    with pytest.raises(raw.DataFormatError, match=message) as info:
        kg.load(ITEMS, folder)
    assert info.value.line == line and info.value.path.endswith("toy.link")


def test_a_folder_without_a_graph_says_what_it_needs(tmp_path):
    with pytest.raises(errors.MissingInputError, match=r"\*\.kg"):
        kg.load(ITEMS, str(tmp_path))
    with pytest.raises(errors.MissingInputError, match="kg_dir"):
        kg.default_dir("1m", str(tmp_path))


def test_links_keyed_by_another_release_are_matched_by_title_and_year(tmp_path):
    # The link file uses another release's ids (as RecBole's ml-100k.link uses
    # MovieLens-1M's): 7 is "Heat (1995)" there, item 30 here.
    folder = _write(tmp_path / "kg", links={"7": "f3", "8": "f1", "9": "f9"})
    movies = tmp_path / "movies.dat"
    movies.write_text("7::Heat (1995)::Action\n8::Toy Story (1995)::Animation\n"
                      "9::Not Here (1990)::Drama\n", encoding="latin-1")
    titles = np.array(["Toy Story", "Other", "Heat", "Four", "Five"])
    years = np.array([1995, 1995, 1995, 1996, 1997])
    graph = kg.load(ITEMS, folder, link_movies=str(movies), item_title=titles, item_year=years,
                    min_items=1)
    np.testing.assert_array_equal(graph.linked, [True, False, True, False, False])
    assert ("d1", "film.film.directed_by") in _entities(graph, 0)  # f1 is item 10 now
    assert ("a1", "film.film.actor") in _entities(graph, 2)  # f3 is item 30
    movies.write_text("7::Heat (1995)\n", encoding="latin-1")  # a malformed row
    with pytest.raises(raw.DataFormatError) as info:
        kg.load(ITEMS, folder, link_movies=str(movies), item_title=titles, item_year=years)
    assert info.value.line == 1 and info.value.field == "genres"


def test_alignment_tells_a_graph_that_matches_taste_from_one_that_does_not():
    rng = np.random.default_rng(0)
    # Five taste groups of four items; each user rates three items of one group.
    group = np.arange(20) // 4
    user = np.repeat(np.arange(200), 3)
    item = 4 * np.repeat(np.arange(200) % 5, 3) + rng.integers(0, 4, 600)
    # Entities: the group (a shared director, say) and one crossing the groups.
    entities = np.stack([group, 5 + np.arange(20) % 4], 1).astype(np.int32)
    relations = np.zeros_like(entities)
    names = np.arange(9).astype(str)
    aligned = kg.ItemGraph(entities, relations, names, np.array(["r"]), np.ones(20, bool))
    # The same graph on shuffled items (a link keyed by other ids).
    shuffled = kg.ItemGraph(entities[rng.permutation(20)], relations, names, np.array(["r"]),
                            np.ones(20, bool))
    assert kg.alignment(aligned, user, item) > 2.0
    assert kg.alignment(shuffled, user, item) < 1.2
