"""Ablation grids: declare them, launch their runs, report their results.

Experiment files (`experiments/*.py`) declare their grids with the helpers
exported here; `python -m rec_jax.sweep {run,report}` does the rest, running
each grid point as a `rec_jax.main` subprocess (this package imports nothing
else of rec_jax). One job per file:

  grid.py      declaring grids (product, zip_axes, seeds, is_tiny), naming runs,
               loading a grid file and expanding it into `Run`s
  launch.py    running a grid's runs locally, one subprocess each, resumable
               (COMPLETE markers, grid.json)
  tpu_vm.py    writing the script that runs a grid on a multi-host Cloud TPU VM
  results.py   reading the runs' results.json into records: swept axes, each
               run's values on them, metric lookup, mean ± std
  report.py    summary.csv and summary.md (mean ± std over seeds, KD gains)
  plots.py     the report's plots (metric vs axis, quality vs serving cost)
  __main__.py  the command line
"""

from rec_jax.sweep.grid import is_tiny, product, seeds, zip_axes

__all__ = ["is_tiny", "product", "seeds", "zip_axes"]
