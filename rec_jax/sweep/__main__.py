"""Ablation grids: expand a grid file, launch its runs, aggregate the results.

  python -m rec_jax.sweep run experiments/temperature.py --root=/tmp/rj/temperature [--arg=tiny]
  python -m rec_jax.sweep run experiments/temperature.py --root=gs://bucket/temperature \\
      --emit=tpu_vm --out=temperature_tpu.sh [--no_coordinator]
  python -m rec_jax.sweep report /tmp/rj/temperature [--metric ndcg@10 auc] [--split test]

Anything after `--` on the `run` command line is appended to every run's
command (e.g. `-- --stage=student`).
"""

import argparse
import sys
from typing import Sequence

from rec_jax.sweep.launch import run_grid
from rec_jax.sweep.report import report
from rec_jax.sweep.tpu_vm import write_tpu_vm_script


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m rec_jax.sweep {run,report} ...`; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        prog="python -m rec_jax.sweep", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="launch a grid (locally, or emit a TPU VM script)")
    run.add_argument("grid", help="grid file, e.g. experiments/kd_terms.py (or kd_terms)")
    run.add_argument("--root", required=True, help="one workdir per run goes under here")
    run.add_argument("--arg", default=None, help="grid and config argument, e.g. tiny")
    run.add_argument("--dry_run", action="store_true", help="print the commands only")
    run.add_argument("--emit", choices=["tpu_vm"], help="write a launch script, run nothing")
    run.add_argument("--out", help="the script --emit writes (default: <grid>_tpu_vm.sh)")
    run.add_argument(
        "--no_coordinator",
        action="store_true",
        help="emit without --coordinator_address/--num_processes/--process_id"
        " (jax.distributed auto-detects TPU VMs)",
    )
    run.add_argument("--python", default=sys.executable, help="python that runs rec_jax.main")
    run.add_argument("--only", help="run only runs whose name contains this")
    rep = sub.add_parser("report", help="aggregate results.json files under a directory")
    rep.add_argument("root")
    rep.add_argument("--out", help="output directory (default: root)")
    rep.add_argument(
        "--metric",
        action="extend",
        nargs="+",
        dest="metrics",
        help="metrics for the table and plots, e.g. ndcg@10 tail/ndcg@10",
    )
    rep.add_argument("--split", default="test", choices=["test", "valid", "valid_selection"])
    rep.add_argument("--compare", action="extend", nargs="+", default=[],
                     help="model pairs A:B to test against each other, pooled over runs "
                          "(e.g. mf_kd:mf_kd@teacher_notext)")
    rep.add_argument("--compare_metric", action="extend", nargs="+", dest="compare_metrics",
                     help="metrics of --compare (default ndcg@10 tail/ndcg@10)")
    args = parser.parse_args(argv)

    if args.command == "report":
        return 0 if report(args.root, args.out, args.metrics, args.split, args.compare,
                           args.compare_metrics or ("ndcg@10", "tail/ndcg@10")) is not None else 1
    if args.emit:
        return write_tpu_vm_script(
            args.grid,
            args.root,
            args.arg,
            out=args.out,
            coordinator=not args.no_coordinator,
            only=args.only,
            extra_args=extra,
        )
    return run_grid(
        args.grid,
        args.root,
        args.arg,
        dry_run=args.dry_run,
        only=args.only,
        prefix=(args.python, "-m", "rec_jax.main"),
        extra_args=extra,
    )


if __name__ == "__main__":
    sys.exit(main())
