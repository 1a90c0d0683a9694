"""The benchmark's command line: ``python -m rec_jax.bench --help`` (parts: see the package)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

from rec_jax import bench
from rec_jax.bench import encoder, machine, mesh_memory, report, serving, teacher, train
from rec_jax.bench import ann as ann_part
from rec_jax.bench import eval as eval_part
from rec_jax.bench.data import Workload, has_tf

PARTS = ("train", "eval", "encoder", "teacher_step", "serving", "mesh", "ann")
STUDENTS = ("mf", "sasrec", "deepfm")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rec_jax.bench",
                                     description=bench.__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="ml100k,100k,1m,10m",
                        help="comma list of ml100k (real) and synthetic 100k,1m,10m")
    parser.add_argument("--out", default=os.path.join(bench.REPO_ROOT, "workdir", "bench",
                                                      "results.json"))
    parser.add_argument("--quick", action="store_true",
                        help="ml-100k only, few repeats (about 2 minutes)")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--models", default=",".join(STUDENTS))
    parser.add_argument("--repeats", type=int, default=0, help="0: 5, or 3 with --quick")
    parser.add_argument("--max_steps", type=int, default=400,
                        help="an epoch longer than this is timed over this many steps")
    parser.add_argument("--sparse_tables", default="",
                        help="train part: comma list of students also timed with "
                             "config.model.<m>.optim.sparse_tables=True (rows <m>_sparse)")
    parser.add_argument("--variant", action="append", default=[],
                        help="train part, repeatable: LABEL=MODEL:key=value[,key=value...] "
                             "times MODEL again under these dotted config overrides as row "
                             "LABEL, e.g. sasrec_sampled=sasrec:model.sasrec.sampled_negatives="
                             "256,model.sasrec.optim.sparse_tables=true")
    parser.add_argument("--data_dir", default=os.path.join(bench.REPO_ROOT, "data"))
    parser.add_argument("--no_tf", action="store_true", help="never prepare data through TFDS")
    parser.add_argument("--config", default="",
                        help="config file[:arg] for model settings (default configs.common."
                             "base_config()); its data.split is used for ml100k")
    parser.add_argument("--prepared", default="",
                        help="a prepared ml-100k folder (arrays.npz) to read as is, without "
                             "raw files or TF (config.data.prepared)")
    parser.add_argument("--bert_path", default="")
    parser.add_argument("--torch_python", default="",
                        help="encoder part: a Python with torch + transformers (a separate venv, "
                             "never this one) to time PyTorch's BertModel on the same batches "
                             "($REC_JAX_TORCH_PYTHON when unset)")
    parser.add_argument("--teacher_freeze", default="")
    parser.add_argument("--dtype", default="",
                        help="config.dtype: compute dtype of every model (float32 | bfloat16)")
    parser.add_argument("--ann_items", type=int, default=1_000_000,
                        help="ann part: synthetic catalogue size (200k with --quick)")
    parser.add_argument("--ann_data", default="clustered",
                        help="ann part: comma list of clustered (judged), gaussian (pessimistic)")
    parser.add_argument("--ann_retrieval", default="ivf",
                        help="ann part: the index, as config.eval.retrieval (ivf[:nlist=,nprobe=])")
    return parser.parse_args(argv)


def variants(args: argparse.Namespace) -> tuple:
    """The train part's extra rows: ``--sparse_tables`` then each ``--variant``."""
    return (tuple(train.sparse_variant(m) for m in args.sparse_tables.split(",") if m)
            + tuple(train.parse_variant(v) for v in args.variant))


def load_config(args: argparse.Namespace):
    """base_config(), or get_config(arg) of ``--config path[:arg]``, with the flags applied."""
    if bench.REPO_ROOT not in sys.path:  # `configs` imports from the checkout.
        sys.path.insert(0, bench.REPO_ROOT)
    if args.config:
        path, _, arg = args.config.partition(":")
        module_spec = importlib.util.spec_from_file_location("bench_config", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        config = module.get_config(arg or None)
    else:
        from configs import common
        config = common.base_config()
        # The README's speed table was measured on `ratio` (the default split
        # before it became the main job's `loo_time`): keep the rows comparable.
        config.data.split = "ratio"
    config.data.data_dir = args.data_dir
    if args.prepared:
        config.data.prepared = args.prepared
    if args.bert_path:
        config.teacher.bert_path = args.bert_path
    if args.teacher_freeze:
        config.teacher.freeze = args.teacher_freeze
    if args.dtype:
        config.dtype = args.dtype
    return config


def main(argv=None) -> dict:
    """Runs the chosen parts, saving the results after each; returns them."""
    args = parse_args(argv)
    config = load_config(args)
    tf_ok = has_tf() and not args.no_tf
    repeats = args.repeats or (3 if args.quick else 5)
    sizes = ["ml100k"] if args.quick else [s for s in args.sizes.split(",") if s]
    models = [m for m in args.models.split(",") if m]
    try:  # A bad --variant ends here in one line, before any part runs.
        extra_rows = variants(args)
        for v in extra_rows:
            train.with_overrides(config, v.overrides)
    except (ValueError, KeyError) as e:
        sys.exit(f"python -m rec_jax.bench: {str(e).strip(chr(39))}")
    work = Workload(config, args.data_dir, tf_ok, args.prepared)
    runs = {  # part -> a function returning its entries of the results
        "train": lambda: train.part(work, config, sizes, models, args.max_steps, repeats,
                                    args.quick, "" if tf_ok else "numpy",
                                    extra_rows),
        "eval": lambda: eval_part.part(work, config, max(repeats, 5),
                                       ("mf",) if args.quick else models),
        "encoder": lambda: encoder.part(args.quick, args.bert_path or None,
                                        args.torch_python or None),
        "teacher_step": lambda: teacher.part(work, config, args.quick),
        "serving": lambda: serving.part(work, config, args.quick),
        "mesh": lambda: {"mesh_memory": mesh_memory.mesh_memory()},
        "ann": lambda: ann_part.part(args.quick, args.ann_items,
                                     [k for k in args.ann_data.split(",") if k], repeats,
                                     args.ann_retrieval),
    }
    chosen = set(args.parts.split(","))
    res: dict = {"machine": machine.machine_info(), "args": vars(args), "repeats": repeats,
                 "part_seconds": {}}
    print(f"machine: {machine.machine_line(res['machine'])}", flush=True)
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    t_all = time.time()
    for part in PARTS:
        t = time.time()
        if part in chosen:
            try:
                res.update(runs[part]())
            except FileNotFoundError as e:  # no BERT weights or data: the rest still runs
                print(f"[{part}] skipped ({e})", flush=True)
        res["part_seconds"][part] = time.time() - t
        report.save(res, out)  # a run stopped by a timeout still leaves the finished parts
    res["memory"] = machine.memory_snapshot()
    res["targets"] = report.evaluate_targets(res)
    res["machine"]["load_average_end"] = machine.load_average()
    res["bench_seconds"] = time.time() - t_all
    png = report.plot_epochs(res, os.path.splitext(out)[0] + "_epoch.png")
    if png:
        res["plot"] = png
    report.save(res, out)
    print("\n" + report.markdown(res), flush=True)
    print(f"\nwrote {out}" + (f" and {png}" if png else "")
          + f" ({res['bench_seconds']:.0f} s)", flush=True)
    return res


if __name__ == "__main__":
    main()
