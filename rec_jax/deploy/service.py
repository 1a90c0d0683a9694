"""The HTTP service over a serving bundle (FastAPI on uvicorn).

    GET  /healthz                        liveness, model name, active items
    GET  /recommend?user_id=..&k=10      top-k items (original ids, titles, scores);
                                         &new_only=true: among items added since export
    POST /items                          a new item from title, year and genres
    POST /interactions                   observed interactions, appended to a log

Only TensorFlow (the SavedModel), the bundle's tokenizer and rec_jax's text
template are read here: no JAX, no training code. Concurrent /recommend
requests are served in micro-batches (what is waiting when the model becomes
free goes in one call), so throughput grows with concurrency while a lone
request pays for one call only.

New items: the text path of a `_fusion` student (BERT, and the teacher's
item projection when fusion reads teacher vectors) encodes the item's
sentence, ``add_item`` writes its row, and the item is recommendable at once.
Each added item (with its vector) is appended to ``<bundle>/store/items.jsonl``
and replayed at start-up, so it survives a restart.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from rec_jax.data import text as text_lib

MAX_BATCH = 64  # requests served by one model call
BUCKETS = tuple(2 ** i for i in range(MAX_BATCH.bit_length()))  # 1, 2, 4, ..., 64


def _bucket(n: int) -> int:
    """The smallest bucket that holds n rows (beyond the largest: the next power of two)."""
    return 1 << max(0, n - 1).bit_length()


class NewItem(BaseModel):
    """POST /items: a new item's metadata (its vector comes from the text path)."""
    title: str = Field(min_length=1, max_length=500)
    year: int = Field(0, ge=0, le=3000)
    genres: list[str] = []
    item_id: str | None = Field(None, min_length=1, max_length=100)


class Interaction(BaseModel):
    """One observed (user, item) pair; the timestamp defaults to the time it is logged."""
    user_id: str
    item_id: str
    rating: float | None = None
    timestamp: int | None = Field(None, ge=0)


class Interactions(BaseModel):
    """POST /interactions: observed interactions for the refresh job."""
    interactions: list[Interaction] = Field(min_length=1, max_length=10_000)


class ServiceError(Exception):
    """A request the service refuses: an HTTP status and a one-line reason."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


class Recommender:
    """A bundle loaded for serving: id maps, the SavedModel and the item store.

    Args:
      bundle: the folder ``python -m rec_jax.export`` wrote.
      interactions_log: where POST /interactions appends (default
        ``<bundle>/store/interactions.jsonl``).
      tf_threads: TensorFlow's intra- and inter-op threads (0: its defaults).
        One call scores at most 64 users, too little work to split; on the
        2-core CPU TF's default pools put /recommend's p99 at concurrency 32 at
        ~280 ms (SASRec-KD), one thread each at ~24 ms, with more requests/s.
    """

    def __init__(self, bundle: str, interactions_log: str | None = None, tf_threads: int = 1):
        import tensorflow as tf

        if tf_threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(tf_threads)
                tf.config.threading.set_inter_op_parallelism_threads(tf_threads)
            except RuntimeError:  # TensorFlow already ran an op in this process: keep its pools
                pass
        self._tf = tf
        meta_path = os.path.join(bundle, "meta.json")
        if not os.path.exists(meta_path):
            raise FileNotFoundError(f"{meta_path} not found: --bundle must be a folder written "
                                    "by python -m rec_jax.export")
        with open(meta_path) as f:
            self.meta = json.load(f)
        self.bundle = bundle
        self.model = tf.saved_model.load(os.path.join(bundle, "model"))
        self.k_max = int(self.meta["k_max"])
        self.user_row = {u: i for i, u in enumerate(self.meta["user_ids"])}
        held = set(self.meta["held_out_rows"])
        self.items: list[dict] = list(self.meta["items"])  # row -> metadata
        self.item_row = {it["item_id"]: r for r, it in enumerate(self.items) if r not in held}
        # Held-out items (export --hold_out) come back through add_item under their id.
        self.held_row = {self.items[r]["item_id"]: r for r in held}
        self.genres = list(self.meta["genres"])
        store = os.path.join(bundle, "store")
        os.makedirs(store, exist_ok=True)
        self.items_log = os.path.join(store, "items.jsonl")
        self.interactions_log = interactions_log or os.path.join(store, "interactions.jsonl")
        self._lock = threading.Lock()
        self._tokenizer = None
        for size in BUCKETS:  # compile every batch shape the batcher uses, now
            self.recommend_rows(np.zeros(size, np.int32), 1)
        if os.path.exists(self.items_log):
            with open(self.items_log) as f:
                for line in f:
                    if line.strip():
                        self._write_item(json.loads(line))

    # -- reading -------------------------------------------------------------

    def rows_of_users(self, user_ids: list[str]) -> np.ndarray:
        missing = [u for u in user_ids if u not in self.user_row]
        if missing:
            raise ServiceError(404, f"unknown user_id {missing[0]!r}")
        return np.array([self.user_row[u] for u in user_ids], np.int32)

    def recommend_rows(self, rows: np.ndarray, k: int, new_only: bool = False
                       ) -> tuple[np.ndarray, np.ndarray]:
        """([B, k] item rows, [B, k] scores) from one model call; new_only: among
        the items added after export only."""
        tf = self._tf
        min_row = self.meta["num_items"] if new_only else 0
        n = len(rows)
        # Batches are padded to a power of two: the converted model compiles once
        # per batch shape, so a few shapes (all compiled at start-up) keep
        # compilation out of the requests' latency.
        padded = np.resize(np.asarray(rows, np.int32), _bucket(n))
        out = self.model.recommend(tf.constant(padded), tf.constant(k, tf.int32),
                                   tf.constant(min_row, tf.int32))
        return out["items"].numpy()[:n], out["scores"].numpy()[:n]

    def format(self, items: np.ndarray, scores: np.ndarray, k: int) -> list[dict]:
        """One user's recommendations as dicts (fewer than k when the catalogue runs out)."""
        return [{"item_id": self.items[r]["item_id"], "title": self.items[r]["title"],
                 "score": float(s)}
                for r, s in zip(items[:k], scores[:k]) if np.isfinite(s)]

    # -- new items -----------------------------------------------------------

    @property
    def has_text_path(self) -> bool:
        return self.meta["text"] is not None

    def encode(self, texts: list[str]) -> np.ndarray:
        """Fusion vectors [n, d_t] of item sentences, through the bundle's text path."""
        tf = self._tf
        if self._tokenizer is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from transformers import BertTokenizerFast

            self._tokenizer = BertTokenizerFast.from_pretrained(
                os.path.join(self.bundle, "tokenizer"), local_files_only=True)
        tokens = text_lib.tokenize(self._tokenizer, texts, int(self.meta["text"]["max_len"]))
        out = self.model.encode_items(*(tf.constant(tokens[k]) for k in (
            "input_ids", "attention_mask", "token_type_ids")))
        return out["vectors"].numpy()

    def add_item(self, title: str, year: int = 0, genres: list[str] | None = None,
                 item_id: str | None = None) -> dict:
        """Adds a never-seen item; it is recommendable when this returns."""
        if not self.has_text_path:
            raise ServiceError(409, f"model {self.meta['model']!r} has no text path: only "
                                    "`_fusion` students can add new items without retraining")
        genres = list(genres or [])
        unknown = [g for g in genres if g not in self.genres]
        if unknown:
            raise ServiceError(422, f"genres: unknown genre {unknown[0]!r} "
                                    f"(use names from {self.genres})")
        with self._lock:
            if item_id is not None and item_id in self.item_row:
                raise ServiceError(409, f"item_id {item_id!r} exists")
            row = len(self.items)
            if row >= self.meta["capacity"]:
                raise ServiceError(507, f"the bundle holds {self.meta['capacity']} items; "
                                        "re-export with a larger --max_new_items")
            vector = self.encode([text_lib.item_text(title, year, genres)])[0]
            record = {"row": row, "item_id": item_id or f"new-{row}", "title": title,
                      "year": int(year), "genres": genres,
                      "vector": [float(v) for v in vector]}
            self._write_item(record)
            with open(self.items_log, "a") as f:
                f.write(json.dumps(record) + "\n")
        return {"item_id": record["item_id"], "row": row}

    def _write_item(self, record: dict) -> None:
        tf = self._tf
        row = int(record["row"])
        if row != len(self.items):
            raise ValueError(f"{self.items_log}: item rows out of order at {record['item_id']!r}")
        multi_hot = np.array([g in record["genres"] for g in self.genres], np.float32)
        year = int(record["year"])
        code, vocab = 0, int(self.meta["year_vocab"])
        if vocab:
            code = 0 if year <= 0 else 1 + int(np.digitize(year, self.meta["year_buckets"]))
            code = min(code, vocab - 1)
        self.model.add_item(tf.constant(row, tf.int32),
                            tf.constant(np.asarray(record["vector"], np.float32)),
                            tf.constant(multi_hot), tf.constant(code, tf.int32),
                            tf.constant(self.held_row.get(record["item_id"], -1), tf.int32))
        self.items.append({"item_id": record["item_id"], "title": record["title"],
                           "year": year, "genres": record["genres"]})
        self.item_row[record["item_id"]] = row

    # -- interactions ----------------------------------------------------------

    def log_interactions(self, records: list[dict]) -> int:
        """Appends interactions (known users and items) to the log the refresh job reads."""
        self.rows_of_users([r["user_id"] for r in records])
        for r in records:
            if r["item_id"] not in self.item_row:
                raise ServiceError(404, f"unknown item_id {r['item_id']!r}")
        now = int(time.time())
        with self._lock, open(self.interactions_log, "a") as f:
            for r in records:
                f.write(json.dumps({"user_id": r["user_id"], "item_id": r["item_id"],
                                    "rating": r.get("rating"),
                                    "timestamp": r.get("timestamp") or now}) + "\n")
        return len(records)


class MicroBatcher:
    """Serves concurrent /recommend calls in batches of up to MAX_BATCH users."""

    def __init__(self, rec: Recommender):
        self.rec = rec
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None

    async def start(self):
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self._loop())

    async def stop(self):
        if self.task is not None:
            self.task.cancel()

    async def recommend(self, row: int, k: int, new_only: bool = False):
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((row, k, new_only, future))
        return await future

    async def _loop(self):
        pending = []
        while True:
            if not pending:
                pending.append(await self.queue.get())
            while len(pending) < 4 * MAX_BATCH and not self.queue.empty():
                pending.append(self.queue.get_nowait())
            # One call serves requests of one kind (all items / new items only).
            kind = pending[0][2]
            batch = [p for p in pending if p[2] == kind][:MAX_BATCH]
            pending = [p for p in pending if not any(p is b for b in batch)]
            rows = np.array([b[0] for b in batch], np.int32)
            k = max(b[1] for b in batch)
            try:
                items, scores = await asyncio.to_thread(self.rec.recommend_rows, rows, k, kind)
            except Exception as e:  # noqa: BLE001 (handed to each waiting request)
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            for i, (_, kk, _, future) in enumerate(batch):
                if not future.done():
                    future.set_result((items[i], scores[i], kk))


def create_app(bundle: str, interactions_log: str | None = None, tf_threads: int = 1):
    """The FastAPI app serving `bundle` (arguments: see Recommender)."""
    import contextlib

    from fastapi import FastAPI, Query, Request
    from fastapi.responses import JSONResponse, Response

    rec = Recommender(bundle, interactions_log, tf_threads)
    batcher = MicroBatcher(rec)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title=f"rec_jax: {rec.meta['model']}", lifespan=lifespan)
    app.state.recommender = rec

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError):
        return JSONResponse(status_code=exc.status, content={"detail": exc.detail})

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "model": rec.meta["model"], "items": len(rec.item_row),
                "users": len(rec.user_row), "new_items": rec.has_text_path}

    @app.get("/recommend")
    async def recommend(user_id: str, k: int = Query(10, ge=1, le=rec.k_max),
                        new_only: bool = False):
        row = int(rec.rows_of_users([user_id])[0])
        items, scores, k = await batcher.recommend(row, k, new_only)
        # Serialised here: FastAPI's generic encoder costs more than the model call.
        return Response(json.dumps({"user_id": user_id, "items": rec.format(items, scores, k)}),
                        media_type="application/json")

    @app.post("/items", status_code=201)
    async def add_item(item: NewItem):
        return await asyncio.to_thread(rec.add_item, item.title, item.year, item.genres,
                                       item.item_id)

    @app.post("/interactions", status_code=202)
    async def interactions(body: Interactions):
        n = rec.log_interactions([i.model_dump() for i in body.interactions])
        return {"logged": n}

    return app
