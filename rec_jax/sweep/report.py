"""A grid's report: summary.csv, summary.md (mean ± std over seeds, KD gains), plots.

Runs that differ only by seed are pooled: a table cell is their mean ± sample
std. Each `<model>_kd` is also compared with its own `<model>` in the same run
(the relative gain of distillation).
"""

import csv
import os
from pathlib import Path
from typing import Any, Sequence

from rec_jax.eval import significance
from rec_jax.sweep.grid import short_keys
from rec_jax.sweep.plots import write_plots
from rec_jax.sweep.results import (
    RunResult,
    axis_label,
    collect,
    compound_axes,
    mean_std,
    metric_value,
    run_values,
    setting,
    show,
)

DEFAULT_METRICS = (
    "ndcg@10",
    "recall@10",
    "hr@10",
    "mrr@10",
    "tail/ndcg@10",
    "auc",
    "score_ms_per_user",
)

# (run index, model, {metric: value}): one per model of each run.
Row = tuple[int, str, dict[str, float]]


def report(
    root: str | os.PathLike,
    out: str | os.PathLike | None = None,
    metrics: Sequence[str] | None = None,
    split: str = "test",
    compare: Sequence[str] = (),
    compare_metrics: Sequence[str] = ("ndcg@10", "tail/ndcg@10"),
) -> str | None:
    """Aggregates a grid's results into summary.csv, summary.md and plots/*.png.

    Args:
      root: directory searched recursively for results.json.
      out: output directory (default: `root`).
      metrics: table columns and plotted metrics; default: DEFAULT_METRICS that
        are present (table), ndcg@10 and auc (plots).
      split: which split the table and plots show ("test" or "valid").
      compare: "A:B" model pairs to test against each other (e.g.
        "mf_kd:mf_kd@teacher_notext"), in every run that has both: mean ± std of
        each, the relative gain of A, and a paired test over users pooled over
        the runs, for each of compare_metrics.

    Returns:
      The Markdown table, or None when no results were found.
    """
    root = Path(root)
    out = Path(out or root)
    runs, pending = collect(root)
    if not runs:
        print(f"no results.json under {root}")
        return None
    keys, values = run_values(runs)
    axes = compound_axes(keys, values)
    short = short_keys(keys)
    rows = [(i, model, rec) for i, r in enumerate(runs) for model, rec in r.models.items()]

    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / "summary.csv", runs, keys, values, rows)
    present = lambda m: any(metric_value(rec, m, split) is not None for _, _, rec in rows)
    columns = [m for m in (metrics or DEFAULT_METRICS) if metrics or present(m)]
    table = _table(runs, values, axes, short, rows, columns, split)
    fixed = [
        f"{short[k]}={show(values[0][k])}"
        for k in keys
        if k != "seed" and not any(k in a for a in axes) and values[0][k] is not None
    ]
    md = [
        f"# Summary of {root}",
        "",
        f"{len(runs)} runs with results; {split} split; cells are mean ± sample std "
        f"(ddof=1) over runs that differ only by seed, n = number of such runs.",
        "",
    ]
    if fixed:
        md += ["Fixed overrides: " + ", ".join(fixed), ""]
    if pending:
        md += [f"Runs without results ({len(pending)}): " + ", ".join(pending), ""]
    gains = _kd_gains(runs, axes, values, split)
    pairs = _comparisons(runs, axes, values, split, compare, compare_metrics) if compare else None
    extra = [x for x in (gains, pairs) if x]
    (out / "summary.md").write_text("\n".join(md + [table, ""] + [y for x in extra
                                                                  for y in (x, "")]))

    plot_metrics = [m for m in (metrics or ("ndcg@10", "auc")) if present(m)]
    write_plots(out / "plots", values, axes, short, rows, plot_metrics, split)
    print(table)
    for x in extra:
        print("\n" + x)
    return table


def _comparisons(runs, axes, values, split, compare, metrics) -> str:
    """Markdown: model A against model B in the runs that have both, per metric.

    A relative gain is of the means over runs; the p-values pair each user's
    metric under A and B within a run, every run's users pooled (users without
    an item in a segment drop out of that segment's test).
    """
    lines = [f"Comparisons ({split}; p: paired over users, pooled over runs):", "",
             "| " + " | ".join([*("/".join(a) for a in axes), "A", "B", "metric", "n", "A",
                               "B", "gain of A", "p (t)", "p (Wilcoxon)"]) + " |",
             "|" + "---|" * (len(axes) + 9)]
    for spec in compare:
        a, sep, b = spec.partition(":")
        if not sep or not a or not b:
            raise ValueError(f"--compare {spec!r}: write it as MODEL_A:MODEL_B")
        groups: dict[tuple, list[int]] = {}
        for i, run in enumerate(runs):
            if a in run.models and b in run.models:
                groups.setdefault(setting(values[i], axes), []).append(i)
        if not groups:
            lines.append(f"| {' | '.join([''] * len(axes))}{' | ' if axes else ''}{a} | {b} | "
                         "(no run has both) | | | | | | |")
            continue
        for key, members in groups.items():
            for metric in metrics:
                xa = [metric_value(runs[i].models[a], metric, split) for i in members]
                xb = [metric_value(runs[i].models[b], metric, split) for i in members]
                if any(x is None for x in xa + xb):
                    continue
                (ma, sa), (mb, sb) = mean_std(xa), mean_std(xb)
                found = [_per_user_pair(runs[i], a, b, split) for i in members]
                p_t = p_w = float("nan")
                if all(f is not None for f in found):
                    test = significance.pooled_test(found, metric)
                    p_t, p_w = test["p_t"], test["p_wilcoxon"]
                gain = f"{100 * (ma / mb - 1):+.1f}%" if mb else "—"
                cell = lambda m, sd: _fmt(m) + ("" if sd is None else f" ± {_fmt(sd)}")
                lines.append("| " + " | ".join([*key, a, b, metric, str(len(members)),
                                                cell(ma, sa), cell(mb, sb), gain,
                                                significance.format_p(p_t),
                                                significance.format_p(p_w)]) + " |")
    return "\n".join(lines)


def _write_csv(
    path: Path,
    runs: list[RunResult],
    keys: list[str],
    values: list[dict[str, Any]],
    rows: list[Row],
) -> None:
    """One row per run x model: every override and every number we have."""
    metric_keys = sorted({k for _, _, rec in rows for k in rec})
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "model", *keys, *metric_keys])
        for i, model, rec in rows:
            writer.writerow(
                [
                    runs[i].name,
                    model,
                    *("" if values[i][k] is None else show(values[i][k]) for k in keys),
                    *(rec.get(k, "") for k in metric_keys),
                ]
            )


def _table(
    runs: list[RunResult],
    values: list[dict[str, Any]],
    axes: list[list[str]],
    short: dict[str, str],
    rows: list[Row],
    columns: list[str],
    split: str,
) -> str:
    """Markdown: rows grouped by the swept values (seed aside) and the model."""
    model_order = list(dict.fromkeys(model for _, model, _ in rows))
    groups: dict[tuple, list[int]] = {}
    for i, model, _ in sorted(rows, key=lambda t: model_order.index(t[1])):
        groups.setdefault((model, setting(values[i], axes)), []).append(i)
    header = [*(axis_label(a, short) for a in axes), "model", "n", *columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (model, _), members in groups.items():
        cells = []
        for m in columns:
            xs = [
                x
                for i in members
                if (x := metric_value(runs[i].models[model], m, split)) is not None
            ]
            if not xs:
                cells.append("")
                continue
            mean, std = mean_std(xs)
            cells.append(
                _fmt(mean)
                + ("" if std is None else f" ± {_fmt(std)}")
                + ("" if len(xs) == len(members) else f" (n={len(xs)})")
            )
        first = values[members[0]]
        lines.append(
            "| "
            + " | ".join([*(show(first[a[0]]) for a in axes), model, str(len(members)), *cells])
            + " |"
        )
    return "\n".join(lines)


def _kd_gains(
    runs: list[RunResult],
    axes: list[list[str]],
    values: list[dict[str, Any]],
    split: str,
    metric: str = "ndcg@10",
) -> str | None:
    """Markdown: relative gain of `<m>_kd` over `<m>` in the same run, mean ± std,
    with a paired test over users pooled over the runs (seeds).

    Each run pairs its own student with and without distillation (same seed,
    same split), so the gain is measured within a run and then averaged; the
    p-values pair each user's metric under the two models, every run's users
    together (their per_user_<split>.npz; "—" where a run has none).
    """
    groups: dict[tuple, list[float]] = {}
    pairs: dict[tuple, list] = {}
    for i, run in enumerate(runs):
        for model, rec in run.models.items():
            if not model.endswith("_kd") or model[:-3] not in run.models:
                continue
            kd = metric_value(rec, metric, split)
            base = metric_value(run.models[model[:-3]], metric, split)
            if kd is None or not base:
                continue
            key = (setting(values[i], axes), model[:-3])
            groups.setdefault(key, []).append(kd / base - 1.0)
            pairs.setdefault(key, []).append(_per_user_pair(run, model, model[:-3], split))
    if not groups:
        return None
    lines = [
        f"Relative {split} {metric} gain of distillation (<model>_kd vs <model>, same run; "
        "p: paired over users, pooled over runs):",
        "",
        "| " + " | ".join([*("/".join(a) for a in axes), "student", "n", "gain", "p (t)",
                         "p (Wilcoxon)"]) + " |",
        "|" + "---|" * (len(axes) + 5),
    ]
    for (key, student), xs in groups.items():
        mean, std = mean_std(xs)
        cell = f"{100 * mean:+.1f}%" + ("" if std is None else f" ± {100 * std:.1f}%")
        found = pairs[(key, student)]
        p_t = p_w = float("nan")
        if found and all(p is not None for p in found):
            test = significance.pooled_test(found, metric)
            p_t, p_w = test["p_t"], test["p_wilcoxon"]
        lines.append("| " + " | ".join([*key, student, str(len(xs)), cell,
                                        significance.format_p(p_t),
                                        significance.format_p(p_w)]) + " |")
    return "\n".join(lines)


def _per_user_pair(run: RunResult, a: str, b: str, split: str):
    """The per-user values of models a and b of a run, or None if either is missing."""
    try:
        return (significance.load_per_user(_model_folder(run, a), split),
                significance.load_per_user(_model_folder(run, b), split))
    except OSError:
        return None


def _model_folder(run: RunResult, name: str) -> str:
    """Where a run's model wrote its outputs (rec_jax.run.model_folder: the run's
    own folder, or the teacher cache of its config; a relative cache_dir is read
    from the current directory, as the run did)."""
    if not ((run.config or {}).get("teacher") or {}).get("cache_dir"):
        return str(run.workdir / name)
    from ml_collections import ConfigDict

    from rec_jax import run as run_lib
    return run_lib.model_folder(name, ConfigDict(run.config), str(run.workdir))


def _fmt(x: float) -> str:
    """A table number: 4 decimals, or 1 for large ones (e.g. num_params)."""
    return f"{x:.4f}" if abs(x) < 1000 else f"{x:.1f}"
