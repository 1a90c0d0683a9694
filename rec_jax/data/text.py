"""Item and user text: templates and tokenisation.

Items read like "Toy Story (1995). Genres: Animation, Children's, Comedy." and
users like "A 24 year old man, occupation: technician." Both go through the
teacher's (BERT) tokenizer, padded and truncated to fixed lengths. Running
BERT over them (and caching its outputs) is ``rec_jax.recipes.text_tables``.
"""

from __future__ import annotations

import numpy as np

from rec_jax.data import raw
from rec_jax.data.dataset import Dataset

# Part of the encoder-output cache key: bump it when a template changes.
TEMPLATE_VERSION = 1


def item_text(title: str, year: int, genres: list[str]) -> str:
    """An item's sentence: title, year when known, genres (the serving path calls this too)."""
    names = [g for g in genres if g != "unknown"]
    head = f"{title} ({year})" if year > 0 else str(title)
    return f"{head}. Genres: {', '.join(names)}." if names else f"{head}."


def item_texts(dataset: Dataset) -> list[str]:
    """One sentence per item (:func:`item_text`)."""
    return [item_text(title, year, [g for g, on in zip(raw.GENRES, genres) if on])
            for title, year, genres in zip(dataset.item_title, dataset.item_year,
                                           dataset.item_genres)]


def user_texts(dataset: Dataset) -> list[str]:
    """One sentence per user from age, gender and occupation."""
    gender_word = {"M": "man", "F": "woman"}
    texts = []
    for age, gender, occupation in zip(dataset.user_age, dataset.user_gender,
                                       dataset.user_occupation):
        who = gender_word.get(str(gender), "person")
        job = str(occupation).replace("/", " or ")
        age_text = f"{int(age)} year old" if age > 1 else "young"
        texts.append(f"A {age_text} {who}, occupation: {job}.")
    return texts


def tokenize(tokenizer, texts: list[str], max_length: int) -> dict[str, np.ndarray]:
    """Pads/truncates to max_length: input_ids, attention_mask, token_type_ids [n, L] int32."""
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length,
                    return_tensors="np")
    return {k: np.asarray(enc[k], np.int32)
            for k in ("input_ids", "attention_mask", "token_type_ids")}
