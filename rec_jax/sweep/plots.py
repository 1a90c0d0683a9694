"""The report's plots: each metric against each swept axis, and quality vs serving cost.

Error bars are the std over runs that differ only by seed.
"""

import re
from pathlib import Path
from typing import Any, Sequence

from rec_jax.sweep.results import axis_label, canon, mean_std, metric_value, setting, show

# A student's embedding size: sweeping it also plots quality vs serving cost.
EMBED_KEY = re.compile(r"^model\.([^.]+)\.embed_dim$")


def write_plots(
    plot_dir: Path,
    values: list[dict[str, Any]],
    axes: list[list[str]],
    short: dict[str, str],
    rows: list,
    metrics: list[str],
    split: str,
) -> list[Path]:
    """Metric vs each swept axis; quality vs serving cost when embed_dim is swept."""
    import matplotlib

    matplotlib.use("Agg")  # No display on servers and in tests.
    import matplotlib.pyplot as plt

    def figures():  # Lazily, so only one figure is open at a time.
        for axis in axes:
            others = [a for a in axes if a is not axis]
            for metric in metrics:
                yield (
                    f"{metric}_vs_{axis_label(axis, short)}",
                    _axis_figure(plt, axis, others, values, short, rows, metric, split),
                )
        embed_axes = [a for a in axes if any(EMBED_KEY.match(k) for k in a)]
        if embed_axes:
            quality = metrics[0] if metrics else "ndcg@10"
            yield (
                f"{quality}_vs_score_ms_per_user",
                _cost_figure(plt, embed_axes[0], axes, values, rows, quality, split),
            )

    plot_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in figures():
        if fig is not None:
            written.append(plot_dir / re.sub(r"[^A-Za-z0-9._=@+-]", "_", f"{name}.png"))
            fig.savefig(written[-1], dpi=110, bbox_inches="tight")
            plt.close(fig)
    return written


def _numeric(values: Sequence[Any]) -> bool:
    """True when every value is a number (bools are not), so the axis is an x scale."""
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _log_x_if_spread(ax, xs: Sequence[float]) -> None:
    # Sizes, temperatures, fractions and latencies are swept on log-like scales.
    if xs and min(xs) > 0 and max(xs) / min(xs) >= 8:
        ax.set_xscale("log")
        ax.set_xticks([], minor=True)


def _axis_figure(plt, axis, others, values, short, rows, metric, split):
    """Metric vs one swept axis with error bars = std over seeds (None if no data).

    One curve per model; when other axes vary too, one panel per model with a
    curve per setting of the other axes.
    """
    label, lead = axis_label(axis, short), axis[0]
    raw: dict[str, Any] = {}  # canonical x -> x, in grid order.
    curves: dict[str, dict[tuple, dict[str, list[float]]]] = {}  # model -> rest -> x -> ys
    for i, model, rec in rows:
        x = canon(values[i][lead])
        raw.setdefault(x, values[i][lead])
        if (y := metric_value(rec, metric, split)) is not None:
            rest = tuple(show(values[i][o[0]]) for o in others)
            curves.setdefault(model, {}).setdefault(rest, {}).setdefault(x, []).append(y)
    # A curve needs two x values. One-factor-at-a-time grids (kd_terms) leave
    # lone points for the other factors' settings; the table shows those.
    if any(len(points) > 1 for c in curves.values() for points in c.values()):
        curves = {m: {r: p for r, p in c.items() if len(p) > 1} for m, c in curves.items()}
        curves = {m: c for m, c in curves.items() if c}
    if not curves:
        return None
    numeric = _numeric(list(raw.values()))
    order = sorted(raw, key=raw.get) if numeric else list(raw)
    pos = {x: float(raw[x]) if numeric else float(k) for k, x in enumerate(order)}
    panels = max(len(c) for c in curves.values()) > 1
    n = len(curves) if panels else 1
    cols = min(n, 3)
    nrows = (n + cols - 1) // cols
    fig, axs = plt.subplots(
        nrows,
        cols,
        squeeze=False,
        sharex=True,
        figsize=(4.5 * cols + (0 if panels else 1.5), 3.3 * nrows),
    )
    # Panels share one legend: a setting of the other axes has one colour throughout.
    colours = {
        rest: f"C{k % 10}"
        for k, rest in enumerate(dict.fromkeys(r for c in curves.values() for r in c))
    }
    legend = {}
    for k, (model, by_rest) in enumerate(curves.items()):
        ax = axs.flat[k if panels else 0]
        for rest, points in by_rest.items():
            xs = sorted(points, key=pos.get)
            stats = [mean_std(points[x]) for x in xs]
            name = ", ".join(f"{axis_label(o, short)}={v}" for o, v in zip(others, rest))
            legend[name if panels else model] = ax.errorbar(
                [pos[x] for x in xs],
                [s[0] for s in stats],
                yerr=[s[1] or 0.0 for s in stats],
                marker="o",
                capsize=3,
                color=colours[rest] if panels else f"C{k % 10}",
            )
        if panels:
            ax.set_title(model, fontsize="medium")
    for ax in axs.flat[n:]:
        ax.set_visible(False)
    for ax in axs.flat[:n]:
        if numeric:
            _log_x_if_spread(ax, list(pos.values()))
        ax.set_xticks([pos[x] for x in order], [show(raw[x]) for x in order])
        ax.set(xlabel=label, ylabel=f"{split} {metric}")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{metric} vs {label} (mean ± std over seeds)")
    fig.tight_layout()
    # Right of the panels, however long the labels: savefig's tight bbox grows to fit.
    fig.legend(
        list(legend.values()),
        list(legend),
        loc="upper left",
        bbox_to_anchor=(1, 0.95),
        fontsize="x-small",
    )
    return fig


def _cost_figure(plt, axis, axes, values, rows, quality, split):
    """Quality vs time to score one user's catalog, a curve per model over sizes.

    Smaller students are the point of distillation: this shows what each size
    buys and costs. Each point is labelled with the model's own size key
    (mf_kd -> model.mf.embed_dim).
    """
    points: dict[str, dict[tuple, list[tuple[float, float]]]] = {}
    for i, model, rec in rows:
        y, x = metric_value(rec, quality, split), rec.get("score_ms_per_user")
        if x is not None and y is not None:
            own = [k for k in axis if model.startswith(EMBED_KEY.match(k).group(1))] or axis
            key = (show(values[i][own[0]]), setting(values[i], axes))
            points.setdefault(model, {}).setdefault(key, []).append((x, y))
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
    all_x = []
    for model, groups in points.items():
        stats = sorted(
            (
                (mean_std([p[0] for p in ps]), mean_std([p[1] for p in ps]), dim)
                for (dim, _), ps in groups.items()
            ),
            key=lambda s: s[0][0],
        )
        all_x += [s[0][0] for s in stats]
        ax.errorbar(
            [s[0][0] for s in stats],
            [s[1][0] for s in stats],
            xerr=[s[0][1] or 0.0 for s in stats],
            yerr=[s[1][1] or 0.0 for s in stats],
            marker="o",
            capsize=3,
            label=model,
        )
        for (x, _), (y, _), dim in stats:
            ax.annotate(
                f"d={dim}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize="x-small"
            )
    _log_x_if_spread(ax, all_x)
    ax.set(
        xlabel="score_ms_per_user (ms to score one user's full catalog)",
        ylabel=f"{split} {quality}",
        title=f"{quality} vs serving cost (mean ± std over seeds)",
    )
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(alpha=0.3)
    return fig
