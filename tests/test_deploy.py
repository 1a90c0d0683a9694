"""Export and serving: the SavedModel equals the in-process student; the HTTP
service answers, adds new items from text, logs interactions and refuses bad input.

Students here are small random-init modules (no training): export parity is a
property of the conversion, not of the weights. The trained-model path
(``rec_jax.deploy.trained`` on a real workdir, and the cold-item check through
the service) runs in tests/test_e2e.py.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rec_jax.deploy import export as export_lib
from rec_jax.models import bert as bert_lib
from rec_jax.models.students import MF, SASRec, DeepFM

tf = pytest.importorskip("tensorflow")

U, I, G, D_TEXT, TEXT_LEN = 9, 31, 19, 8, 12


def _side(rng):
    seen = rng.random(I) > 0.2
    return {
        "user_age": rng.integers(0, 3, U).astype(np.int32),
        "user_gender": rng.integers(0, 2, U).astype(np.int32),
        "user_occupation": rng.integers(0, 4, U).astype(np.int32),
        "item_year": rng.integers(0, 5, I).astype(np.int32),
        "item_genres": (rng.random((I, G)) > 0.8).astype(np.float32),
        "item_seen": seen,
        "fusion_text": rng.normal(size=(I, D_TEXT)).astype(np.float32),
    }


def _text_path(rng):
    """A stand-in text encoder: a fixed random table over word-piece ids, mean-pooled."""
    table = rng.normal(size=(30522, D_TEXT)).astype(np.float32)

    def fn(variables, input_ids, attention_mask, token_type_ids):
        del token_type_ids
        mask = attention_mask.astype(jnp.float32)
        vec = variables["table"][input_ids] * mask[..., None]
        return vec.sum(1) / jnp.maximum(mask.sum(1, keepdims=True), 1.0)
    return export_lib.TextPath(fn, {"table": table}, TEXT_LEN,
                               str(bert_lib.default_bert_path()), "text")


def make_student(family: str, fusion: bool = False, seed: int = 0) -> export_lib.Student:
    rng = np.random.default_rng(seed)
    side = _side(rng)
    mode = "add" if fusion else "none"
    users = np.arange(U, dtype=np.int32)
    query = {"user": users}
    if family == "mf":
        module = MF(U, I, 16, fusion=mode)
    elif family == "sasrec":
        module = SASRec(I, 16, max_len=6, num_layers=1, fusion=mode)
        inputs = rng.integers(0, I, (U, 6)).astype(np.int32)
        inputs[:, :2] = -1  # left padding
        query["inputs"] = inputs
    else:
        vocab = tuple((k, int(side[k].max()) + 1) for k in
                      ("user_age", "user_gender", "user_occupation", "item_year"))
        module = DeepFM(U, I, vocab, G, 8, hidden=(16, 8), fusion=mode)
    params = jax.jit(lambda r, q, s: module.init(r, q, s, method="score_all"))(
        jax.random.PRNGKey(seed), query, side)["params"]
    exclude = rng.random((U, I)) > 0.7
    return export_lib.Student(
        name=f"{family}_fusion" if fusion else family, family=family, module=module,
        params=jax.device_get(params), query=query, side=side, exclude=exclude,
        user_ids=np.array([str(100 + u) for u in range(U)]),
        item_ids=np.array([str(500 + i) for i in range(I)]),
        item_title=np.array([f"Film {i}" for i in range(I)]),
        item_year=rng.integers(1950, 1999, I).astype(np.int32),
        item_genres=side["item_genres"] > 0,
        text=_text_path(rng) if fusion else None,
        cold_items=np.flatnonzero(~side["item_seen"]))


def reference_scores(student, users):
    q = {k: v[users] for k, v in student.query.items()}
    fn = jax.jit(lambda p, q, s: student.module.apply({"params": p}, q, s, method="score_all"))
    return np.asarray(fn(student.params, q, student.side))


_EXPORTED = {}


def exported(tmp_path_factory, family, fusion):
    """(student, loaded SavedModel), exported once per module."""
    if (family, fusion) not in _EXPORTED:
        student = make_student(family, fusion)
        folder = tmp_path_factory.mktemp(f"{family}_{fusion}")
        export_lib.export(student, str(folder / "b"), max_new_items=5)
        _EXPORTED[family, fusion] = student, tf.saved_model.load(str(folder / "b" / "model"))
    return _EXPORTED[family, fusion]


# Every family; the fused variants carry the text path and the new-item tables too.
@pytest.mark.parametrize("family,fusion", [("mf", False), ("sasrec", True), ("deepfm", True)])
def test_savedmodel_equals_in_process_student(tmp_path_factory, family, fusion):
    student, model = exported(tmp_path_factory, family, fusion)  # loaded with TensorFlow only
    users = np.arange(U, dtype=np.int32)
    ref = reference_scores(student, users)
    all_items = np.tile(np.arange(I, dtype=np.int32), (U, 1))
    got = model.score(tf.constant(users), tf.constant(all_items))["scores"].numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    out = model.recommend(tf.constant(users), tf.constant(7), tf.constant(0))
    masked = np.where(student.exclude, -np.inf, ref)
    np.testing.assert_array_equal(out["items"].numpy(),
                                  np.argsort(-masked, axis=1, kind="stable")[:, :7])
    assert not student.exclude[users[:, None], out["items"].numpy()].any()  # seen excluded
    # The same through the signatures a TF-only client (TF Serving) calls.
    sig = model.signatures["recommend"]
    out2 = sig(user_rows=tf.constant(users), k=tf.constant(7), min_row=tf.constant(0))
    np.testing.assert_array_equal(out2["items"].numpy(), out["items"].numpy())


def test_new_item_scores_like_an_unseen_trained_item(tmp_path_factory):
    """add_item writes a row that scores exactly as an unseen item with the same inputs does."""
    student, model = exported(tmp_path_factory, "deepfm", True)
    cold = int(student.cold_items[0])
    s = student.side
    model.add_item(tf.constant(I, tf.int32), tf.constant(s["fusion_text"][cold]),
                   tf.constant(s["item_genres"][cold]), tf.constant(int(s["item_year"][cold])),
                   tf.constant(-1, tf.int32))
    users = np.arange(U, dtype=np.int32)
    got = model.score(tf.constant(users),
                      tf.constant(np.array([[cold, I]] * U, np.int32)))["scores"].numpy()
    np.testing.assert_allclose(got[:, 1], got[:, 0], atol=1e-6)
    # It is recommendable at once: among new items only, it is the one answer.
    out = model.recommend(tf.constant(users), tf.constant(2), tf.constant(I))
    assert (out["items"].numpy()[:, 0] == I).all()  # (runs after the parity test: no clash)
    assert np.isinf(out["scores"].numpy()[:, 1]).all()  # no second new item


def test_padding_is_refused_below_the_catalogue():
    with pytest.raises(ValueError, match="capacity"):
        export_lib.serving_tables(make_student("mf"), I - 1)


# ---------------------------------------------------------------------------
# The HTTP service.
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    export_lib.export(make_student("mf", fusion=True), str(root / "fusion"), max_new_items=2)
    export_lib.export(make_student("mf"), str(root / "plain"), max_new_items=2)
    return root


def _client(bundle, **kw):
    from fastapi.testclient import TestClient

    from rec_jax.deploy import service

    return TestClient(service.create_app(str(bundle), **kw))


def test_service_recommends_and_refuses_bad_requests(bundles):
    student = make_student("mf", fusion=True)
    ref = np.where(student.exclude, -np.inf, reference_scores(student, np.arange(U)))
    with _client(bundles / "fusion") as c:
        health = c.get("/healthz").json()
        assert health == {"status": "ok", "model": "mf_fusion", "items": I, "users": U,
                          "new_items": True}
        r = c.get("/recommend", params={"user_id": "103", "k": 5})
        assert r.status_code == 200
        items = r.json()["items"]
        want = np.argsort(-ref[3], kind="stable")[:5]
        assert [it["item_id"] for it in items] == [str(500 + i) for i in want]
        assert items[0]["title"] == f"Film {want[0]}"
        np.testing.assert_allclose([it["score"] for it in items], ref[3, want], atol=1e-5)
        assert c.get("/recommend", params={"user_id": "nobody"}).status_code == 404
        assert "unknown user_id 'nobody'" in c.get(
            "/recommend", params={"user_id": "nobody"}).json()["detail"]
        for k in (0, 101, "x"):
            assert c.get("/recommend", params={"user_id": "103", "k": k}).status_code == 422
        assert c.get("/recommend").status_code == 422  # user_id missing


def test_service_adds_items_that_survive_a_restart(bundles, tmp_path):
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(bundles / "fusion", bundle)
    with _client(bundle) as c:
        r = c.post("/items", json={"title": "A New Film", "year": 2026,
                                   "genres": ["Comedy", "Drama"], "item_id": "n1"})
        assert r.status_code == 201 and r.json() == {"item_id": "n1", "row": I}
        top = c.get("/recommend", params={"user_id": "100", "k": 3,
                                          "new_only": True}).json()["items"]
        assert [it["item_id"] for it in top] == ["n1"] and top[0]["title"] == "A New Film"
        assert c.post("/items", json={"title": "Again", "item_id": "n1"}).status_code == 409
        assert c.post("/items", json={"title": "X", "genres": ["Polka"]}).status_code == 422
        assert c.post("/items", json={"year": 1999}).status_code == 422  # no title
        assert c.post("/items", content=b"{not json",
                      headers={"content-type": "application/json"}).status_code == 422
        assert c.post("/items", json={"title": "Second"}).status_code == 201  # id new-32
        full = c.post("/items", json={"title": "Third"})  # capacity I + 2
        assert full.status_code == 507 and "max_new_items" in full.json()["detail"]
    with _client(bundle) as c:  # restarted: both new items are back, same scores
        assert c.get("/healthz").json()["items"] == I + 2
        again = c.get("/recommend", params={"user_id": "100", "k": 3,
                                            "new_only": True}).json()["items"]
        assert {it["item_id"] for it in again} == {"n1", f"new-{I + 1}"}
        assert [it for it in again if it["item_id"] == "n1"][0]["score"] == pytest.approx(
            top[0]["score"], abs=1e-6)


def test_service_logs_interactions(bundles, tmp_path):
    log = tmp_path / "log.jsonl"
    with _client(bundles / "plain", interactions_log=str(log)) as c:
        r = c.post("/interactions", json={"interactions": [
            {"user_id": "100", "item_id": "501", "rating": 4, "timestamp": 5},
            {"user_id": "101", "item_id": "502"}]})
        assert r.status_code == 202 and r.json() == {"logged": 2}
        assert c.post("/interactions", json={"interactions": []}).status_code == 422
        bad = c.post("/interactions", json={"interactions": [{"user_id": "100",
                                                              "item_id": "nope"}]})
        assert bad.status_code == 404 and "nope" in bad.json()["detail"]
        assert c.post("/interactions", json={"interactions": [{"user_id": "100"}]}
                      ).status_code == 422
        # A plain student has no text path: it cannot take new items.
        r = c.post("/items", json={"title": "New"})
        assert r.status_code == 409 and "_fusion" in r.json()["detail"]
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines[0] == {"user_id": "100", "item_id": "501", "rating": 4, "timestamp": 5}
    assert lines[1]["item_id"] == "502" and lines[1]["timestamp"] > 1_700_000_000
    assert len(lines) == 2  # the refused requests wrote nothing


def test_serve_cli_refuses_a_folder_that_is_no_bundle(tmp_path, capsys):
    from rec_jax import serve

    with pytest.raises(SystemExit) as e:
        serve.main([f"--bundle={tmp_path}"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {os.path.join(str(tmp_path), 'meta.json')} not found: --bundle must be a "
        "folder written by python -m rec_jax.export"]


def test_an_older_run_config_loads_over_todays_defaults(tmp_path):
    """export reads a finished job's run.json; keys added since take their defaults."""
    from rec_jax import errors
    from rec_jax.deploy import trained

    saved = {"seed": 3, "data": {"split": "cold_items", "cold_fraction": 0.2},
             "eval": {"ks": [5, 10]}, "teacher": {"train": {"epochs": 7.0}}}
    (tmp_path / "run.json").write_text(json.dumps({"config": saved}))
    config = trained.run_config(str(tmp_path))
    assert (config.seed, config.data.split, config.data.cold_fraction) == (3, "cold_items", 0.2)
    assert config.eval.ks == (5, 10) and config.teacher.train.epochs == 7.0
    assert config.data.extra_interactions == "" and config.teacher.train.init_from == ""
    with pytest.raises(errors.MissingInputError, match="must be a workdir"):
        trained.run_config(str(tmp_path / "nowhere"))


def test_export_refuses_a_model_without_a_finished_checkpoint(tmp_path):
    """restore_best never trains: no checkpoint (or an unfinished run) is a one-line error."""
    import ml_collections

    from rec_jax import errors
    from rec_jax.spec import ModelSpec
    from rec_jax.train import trainer

    spec = ModelSpec(name="mf_kd", init=None, loss_fn=None, source=None, score_fn=None,
                     make_query=None)
    cfg = ml_collections.ConfigDict({"train": {"keep_checkpoints": 2}})
    with pytest.raises(errors.MissingInputError, match=r"no checkpoint in .*: train 'mf_kd' "
                                                        r"first \(python -m rec_jax.main\)"):
        trainer.restore_best(spec, cfg, str(tmp_path / "mf_kd"), seed=0)
