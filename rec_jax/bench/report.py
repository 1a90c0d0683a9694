"""The benchmark's report: the Markdown tables, the targets it judges, the epoch plot.

Everything here reads the results dict (or its saved JSON) only, so a saved
run can be reported again (``scripts/gpu_check.sh`` does).
"""

from __future__ import annotations

import json
import math
import os

from rec_jax.bench.data import SIZES
from rec_jax.bench.machine import machine_line


def save(res: dict, path: str) -> None:
    """Writes the results as JSON atomically (a reader never sees half a file)."""
    with open(path + ".tmp", "w") as f:
        json.dump(res, f, indent=1, default=float)
    os.replace(path + ".tmp", path)


def _fmt(x, digits=0) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isnan(x):
        return "-"
    return f"{x:,.{digits}f}"


def _table(title: str, *columns: str) -> list[str]:
    """A section's title and the head of its Markdown table."""
    return [title, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def _train(train: dict, growth: dict) -> list[str]:
    lines = _table("### Student training (real step + pipeline, median after compile)",
                   "data", "interactions", "train ex.", "model", "params", "batch",
                   "steps/epoch", "ex/s", "ex/CPU-s", "ms/step", "s/epoch", "data prep")
    for label, entry in train.items():
        d = entry["data"]
        prep = (f"TFDS {d['tfds_prepare_seconds']:.0f} s "
                f"({d['tfds_prepare_examples_per_s']:,.0f} ex/s)"
                if d.get("tfds_prepare_seconds") else f"load {d.get('load_seconds', 0):.1f} s")
        for r in entry["models"].values():
            if "error" in r:
                lines.append(f"| {label} | | | {r['model']} | | | | error: {r['error']} "
                             "| | | | |")
                continue
            lines.append(
                f"| {label} | {d['interactions']:,} | {r['train_examples']:,} | {r['model']} | "
                f"{r.get('num_params', 0) / 1e6:.2f}M | {r['global_batch']} | "
                f"{r['steps_per_epoch']:,} | "
                f"{_fmt(r['examples_per_s'])} | {_fmt(r.get('examples_per_cpu_s'))} | "
                f"{r['step_ms']:.2f} | "
                f"{r['epoch_s']:.2f}{'' if r['epoch_measured'] else '*'} | {prep} |")
    lines += ["", "`*` epoch time extrapolated from the timed steps. An example is a "
              "(user, item, negatives) triple for MF, a rated pair with its sampled "
              "negatives for DeepFM, and a user's whole sequence (up to 50 positions, "
              "full softmax) for SASRec."]
    if growth:
        lines += ["", "Epoch-time growth exponent (log t / log N, synthetic sizes; 1 = linear): "
                  + ", ".join(f"{m} {g:.2f}" for m, g in growth.items() if g is not None)]
    return lines


def _mf_profile(prof: dict) -> list[str]:
    lines = _table(f"### MF step profile (ml-100k, per step of {prof['global_batch']} examples)",
                   "part", "ms/step")
    for key in ("build_batch_ms", "host_to_device_ms", "jit_step_ms", "pmap_overhead_ms",
                "step_ms", "metric_sums_ms"):
        lines.append(f"| {key[:-3].replace('_', ' ')} | {prof[key]:.3f} |")
    for label, v in prof.get("variants", {}).items():
        lines.append(f"| whole loop, {label} | {1000 * v['epoch_s'] / prof['steps_per_epoch']:.3f}"
                     f" ({v['examples_per_s']:,.0f} ex/s) |")
    if "trainer_fit" in prof:
        f = prof["trainer_fit"]
        lines.append(f"| trainer.fit, {f['epochs']} epochs ({f['note']}) | "
                     f"{f['seconds']:.1f} s total ({f['examples_per_s']:,.0f} ex/s) |")
    return lines


def _eval(ev: dict) -> list[str]:
    lines = _table("### Full-ranking evaluation (ml-100k test users x all items)",
                   "model", "batch users", "+recs", "users", "items", "seconds", "users/s")
    for r in ev.values():
        lines.append(f"| {r['model']} | {r['batch_users']} | {'yes' if r['keep_recs'] else 'no'}"
                     f" | {r['users']} | {r['items']:,} | {r['seconds']:.4f} | "
                     f"{_fmt(r['users_per_s'])} |")
    return lines


def _encoder(enc: dict) -> list[str]:
    lines = _table(f"### Teacher encoder (BERT, {enc['float32']['items']} item texts, bucketed)",
                   "dtype", "fwd items/s", "fwd+bwd items/s")
    for dtype in ("float32", "bfloat16"):
        r = enc[dtype]
        lines.append(f"| {dtype} | {_fmt(r['fwd_items_per_s'], 1)} | "
                     f"{_fmt(r['fwd_bwd_items_per_s'], 1)} |")
    lines.append(f"\nFLOPs per item at length {enc['flops_length']}: fwd "
                 f"{enc['xla_fwd_flops_per_item'] / 1e9:.2f} GFLOP (XLA), "
                 f"{enc.get('analytic_fwd_flops_per_item', 0) / 1e9:.2f} (analytic); "
                 f"fwd+bwd {enc['xla_fwd_bwd_flops_per_item'] / 1e9:.2f} (XLA)")
    return lines


def _teacher_step(ts: dict) -> list[str]:
    frac = ts.get("fraction_of_peak")
    return [f"### Teacher train step (freeze={ts['freeze']}, {ts['dtype']}, batch "
            f"{ts['batch_per_device']}/device)", "",
            f"{ts['step_ms']:.1f} ms/step, {(ts['flops_per_step'] or 0) / 1e9:.1f} GFLOP/step "
            f"(XLA), {(ts['achieved_flops_per_s'] or 0) / 1e12:.3f} TFLOP/s achieved"
            + (f", {100 * frac:.1f}% of {ts['peak_bf16_flops'] / 1e12:.0f} TFLOP/s bf16 peak"
               if frac else " (no known peak for this device)")]


def _serving(sv: dict) -> list[str]:
    lines = _table(f"### Serving: rank all {sv['num_items']:,} items (scores + top {sv['k']})",
                   "users", "call form", "MF ms", "teacher ms (rank + BERT profile text)",
                   "speedup")
    for b in (1, 1024):
        for form, label in (("rank", "served (weights held)"), ("args", "jit(params, ...)")):
            if f"mf_{form}_ms_{b}" not in sv:
                continue
            lines.append(
                f"| {b} | {label} | {sv[f'mf_{form}_ms_{b}']:.3f} | "
                f"{sv[f'teacher_total_{form}_ms_{b}']:.2f} "
                f"({sv[f'teacher_{form}_ms_{b}']:.2f} + "
                f"{sv[f'teacher_bert_user_text_ms_{b}']:.2f}) | "
                f"{sv[f'speedup_{form}_{b}']:.0f}x |")
    return lines


def _mesh_memory(mm: list) -> list[str]:
    lines = _table("### 10M-item x 64 MF + Adam, row-sharded: memory per device",
                   "devices", "item rows/device", "params+moments GiB", "step peak GiB (XLA)")
    for r in mm:
        if "skipped" in r:
            continue
        lines.append(f"| {r['devices']} | {r['item_rows_per_device']:,} | "
                     f"{r['state_bytes'] / 2**30:.2f} | "
                     f"{r.get('peak_bytes', float('nan')) / 2**30:.2f} |")
    return lines


def _targets(tg: list) -> list[str]:
    return _table("### Targets", "target", "measured", "met") + [
        f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'NO'} |" for t in tg]


def markdown(res: dict) -> str:
    """The results as Markdown: the machine, then one section per part that ran."""
    lines = [f"Machine: {machine_line(res['machine'])}", ""]
    if res.get("train"):
        lines += _train(res["train"], res.get("epoch_growth", {}))
    for key, section in (("mf_profile", _mf_profile), ("eval", _eval), ("encoder", _encoder),
                         ("teacher_step", _teacher_step), ("serving", _serving),
                         ("mesh_memory", _mesh_memory), ("targets", _targets)):
        if res.get(key):
            lines += [""] + section(res[key])
    mem = res.get("memory")
    if mem:
        lines += ["", f"Peak host RSS {mem['host_peak_rss_gib']:.2f} GiB"
                  + (f"; device peak {mem['device_peak_bytes_in_use'] / 2**30:.2f} GiB"
                     if mem.get("device_peak_bytes_in_use") else "")]
    if res.get("part_seconds"):
        lines.append("Benchmark seconds by part: " + ", ".join(
            f"{k} {v:.0f}" for k, v in res["part_seconds"].items()))
    return "\n".join(lines)


def plot_epochs(res: dict, path: str) -> str | None:
    """Time per epoch vs interactions (log-log) per model, with a linear reference."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    series: dict[str, list] = {}
    for label, entry in res.get("train", {}).items():
        if SIZES.get(label) is None:
            continue
        for name, r in entry["models"].items():
            if "epoch_s" in r:
                series.setdefault(name, []).append((entry["data"]["interactions"], r["epoch_s"],
                                                    r["epoch_measured"]))
    if not any(len(v) >= 1 for v in series.values()):
        return None
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, pts in sorted(series.items()):
        pts.sort()
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        line, = ax.plot(xs, ys, "o-", label=name)
        ax.plot(xs, [ys[0] * x / xs[0] for x in xs], ":", color=line.get_color(),
                label=f"{name}: linear from smallest")
        for x, y, measured in pts:
            if not measured:
                ax.annotate("extrap.", (x, y), fontsize=7, xytext=(3, -9),
                            textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("interactions (synthetic MovieLens)")
    ax.set_ylabel("seconds per training epoch")
    ax.set_title(f"epoch time vs data size\n{res['machine']['cpu'][:40]}, "
                 f"{res['machine']['device_count']} x {res['machine']['device_kind']}",
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def evaluate_targets(res: dict) -> list[dict]:
    """The project's speed targets, each with the measured figure and whether it is met."""
    out = []
    train = res.get("train", {})
    mf = train.get("ml100k", {}).get("models", {}).get("mf")
    if mf and "examples_per_s" in mf:
        out.append({"target": "MF training >= 500,000 ex/s on ml-100k",
                    "measured": f"{mf['examples_per_s']:,.0f} ex/s",
                    "met": mf["examples_per_s"] >= 500_000})
    ev = res.get("eval", {})
    key = next((k for k in ev if k.startswith("mf batch") and "+recs" not in k), None)
    if key:
        best = min(v["seconds"] for k, v in ev.items() if v["model"] == "mf")
        out.append({"target": "full-ranking eval of ml-100k (943 x 1,682), MF < 0.1 s",
                    "measured": f"{ev[key]['seconds']:.3f} s (default batch); best {best:.3f} s",
                    "met": ev[key]["seconds"] < 0.1})
    growth = res.get("epoch_growth", {})
    for name, g in growth.items():
        if g is not None:
            out.append({"target": f"{name} epoch time grows <= linearly (100k -> largest)",
                        "measured": f"exponent {g:.2f}", "met": g <= 1.05})
    sv = res.get("serving")
    if sv:
        out.append({"target": "student ranks a user's catalogue >= 100x faster than the teacher",
                    "measured": f"{sv['speedup_1']:.0f}x (1 user, served), "
                                f"{sv.get('speedup_args_1', float('nan')):.0f}x (1 user, "
                                f"jit(params, ...)), {sv['speedup_1024']:.0f}x (1,024 users)",
                    "met": sv["speedup_1"] >= 100})
    return out
