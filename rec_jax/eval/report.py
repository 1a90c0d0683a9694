"""results.json -> report.md: one Markdown table of every model of a run."""

from __future__ import annotations

import json
import math
import os

from rec_jax.eval import significance

# (header, split, metric key); a column is shown when any model has the key.
COLUMNS = (
    ("NDCG@10", "test", "ndcg@10"),
    ("Recall@10", "test", "recall@10"),
    ("HR@10", "test", "hr@10"),
    ("MRR@10", "test", "mrr@10"),
    ("NDCG@20", "test", "ndcg@20"),
    ("tail NDCG@10", "test", "tail/ndcg@10"),
    ("tail Recall@10", "test", "tail/recall@10"),
    ("head NDCG@10", "test", "head/ndcg@10"),
    ("strict NDCG@10", "test", "strict/ndcg@10"),
    ("cold Recall@10", "test", "cold/recall@10"),
    ("cold NDCG@10", "test", "cold/ndcg@10"),
    ("cold-only Recall@10", "test", "cold_only/recall@10"),
    ("AUC", "test", "auc"),
    ("LogLoss", "test", "logloss"),
    ("top-10 overlap w/ teacher", "test", "agree/top10_overlap"),
    ("KL(teacher‖student)", "test", "agree/kl"),
    ("NDCG@10, train-only history", "test_train_history", "ndcg@10"),
    ("valid NDCG@10", "valid", "ndcg@10"),
    ("params", "info", "num_params"),
    ("frozen params", "info", "num_params_frozen"),
    ("score ms/user", "info", "score_ms_per_user"),
    ("train s", "info", "train_seconds"),
)


def _fmt(value, key):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if key in ("num_params", "num_params_frozen"):
        return f"{int(value):,}"
    if key in ("score_ms_per_user",):
        return f"{value:.3g}"
    if key == "train_seconds":
        return f"{value:.0f}"
    return f"{value:.4f}"


def markdown_table(results: dict, title: str | None = None) -> str:
    """A Markdown table of results {model: {split: {metric: value}}}."""
    cols = [c for c in COLUMNS if any(c[2] in r.get(c[1], {}) for r in results.values())]
    lines = []
    if title:
        lines += [f"### {title}", ""]
    lines.append("| model | KD | " + " | ".join(c[0] for c in cols) + " |")
    lines.append("|---|---|" + "---|" * len(cols))
    for name, r in results.items():
        kd = ("yes" if "_kd" in name
              else ("—" if name.startswith(("teacher", "pop", "ease", "knn_")) else "no"))
        cells = [_fmt(r.get(split, {}).get(key), key) for _, split, key in cols]
        lines.append(f"| {name} | {kd} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _gain(rel: float) -> str:
    return "—" if math.isnan(rel) else f"{100 * rel:+.1f}%"


def paired_table(folders: dict[str, str], results: dict, metrics=("ndcg@10", "tail/ndcg@10"),
                 part: str = "test") -> str:
    """Markdown: each `_kd` model against its plain twin and against the best
    baseline, paired over users (rec_jax.eval.significance).

    The best baseline is the model without distillation (teachers excluded)
    with the highest *validation* NDCG@10, so test is not read to pick it.

    Args:
      folders: model name -> its folder (where per_user_<part>.npz is).
      results: model name -> its results entry.
    """
    def per_user(name):
        try:
            return significance.load_per_user(folders[name], part)
        except (OSError, KeyError):
            return None

    plain = [n for n in results if "_kd" not in n and not n.startswith("teacher")]
    # On the users the non-teacher models were selected on (eval.selection); the
    # whole validation set in runs from before that existed.
    best = max(plain, key=lambda n: results[n].get("valid_selection", results[n].get(
        "valid", {})).get("ndcg@10", -1.0), default=None)
    rows = []
    for name in results:
        if "_kd" not in name:
            continue
        twin = name.split("_kd")[0]
        for base in dict.fromkeys(b for b in (twin, best) if b and b in results):
            a, b = per_user(name), per_user(base)
            if a is None or b is None:
                continue
            for metric in metrics:
                test = significance.paired_test(*significance.paired_values(a, b, metric))
                rows.append(f"| {name} | {base} | {metric} | {int(test['n'])} | "
                            f"{test['mean_a']:.4f} | {test['mean_b']:.4f} | "
                            f"{_gain(test['rel'])} | {significance.format_p(test['p_t'])} | "
                            f"{significance.format_p(test['p_wilcoxon'])} |")
    if not rows:
        return ""
    return ("\n### Paired tests over users (test)\n\n"
            f"Best baseline on validation NDCG@10: `{best}`.\n\n"
            "| model | vs | metric | users | model | vs | gain | p (t) | p (Wilcoxon) |\n"
            "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")


def write_report(workdir: str, results: dict, header: str, extra: str = "") -> str:
    """Writes workdir/report.md and returns its text."""
    text = header.rstrip() + "\n\n" + markdown_table(results) + extra
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write(text)
    return text


def read_results(workdir: str) -> dict:
    path = os.path.join(workdir, "results.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def fraction_table(by_fraction: dict, names: list[str], metric: str = "ndcg@10") -> str:
    """Markdown: test `metric` of each model (rows) at each label fraction (columns)."""
    fractions = sorted(by_fraction)
    lines = [f"### Test {metric} by share of training labels", "",
             "| model | " + " | ".join(f"{f:g}" for f in fractions) + " |",
             "|---|" + "---|" * len(fractions)]
    for name in names:
        cells = [_fmt(by_fraction[f].get(name, {}).get("test", {}).get(metric), metric)
                 for f in fractions]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_vs_fraction(by_fraction: dict, names: list[str], path: str,
                     metric: str = "ndcg@10") -> None:
    """PNG of test `metric` against the label fraction, one line per model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fractions = sorted(by_fraction)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in names:
        ys = [by_fraction[f].get(name, {}).get("test", {}).get(metric) for f in fractions]
        points = [(f, y) for f, y in zip(fractions, ys) if y is not None]
        if points:
            ax.plot(*zip(*points), marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xticks(fractions)
    ax.set_xticklabels([f"{f:g}" for f in fractions])
    ax.set_xlabel("share of each user's training interactions")
    ax.set_ylabel(f"test {metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
