"""The machine a benchmark runs on, and how its figures are timed.

Every figure is a median over repeats after compilation, and the machine
(cores, device kind, load average) is recorded with it: on a shared machine
the load moves wall times by tens of percent.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from typing import Any, Callable

import jax

# Dense bf16 tensor-core peak per chip (vendor datasheets, no sparsity).
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "GH200": 989e12, "A100": 312e12,
                   "L4": 121e12, "L40S": 362e12, "A10G": 70e12, "V100": 125e12,
                   "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12,
                   "TPU v5p": 459e12, "TPU v6": 918e12}


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def machine_info() -> dict:
    """Cores, memory, devices and versions, with the load average at the start."""
    devices = jax.devices()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on every OS
        usable = os.cpu_count()
    mem_gib = None
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {"cpu": cpu_model(), "cpu_cores": os.cpu_count(), "usable_cores": usable,
            "memory_gib": mem_gib, "platform": devices[0].platform,
            "device_kind": devices[0].device_kind, "device_count": len(devices),
            "jax": jax.__version__, "python": platform.python_version(),
            "load_average_start": load_average()}


def machine_line(m: dict) -> str:
    """One line describing a `machine_info` record (and its end load, if set)."""
    return (f"{m['cpu']} ({m['usable_cores']} usable of {m['cpu_cores']} cores, "
            f"{m['memory_gib']} GiB), {m['device_count']} x {m['platform']}:{m['device_kind']}, "
            f"JAX {m['jax']}, load avg {m['load_average_start']} -> {m.get('load_average_end')}")


def peak_flops(device_kind: str) -> float | None:
    """Dense bf16 peak FLOP/s of a device kind, if known (longest name match)."""
    kind = device_kind.upper()
    hits = [k for k in PEAK_BF16_FLOPS if k.upper() in kind]
    return PEAK_BF16_FLOPS[max(hits, key=len)] if hits else None


def memory_snapshot() -> dict:
    """Host peak RSS, and device memory stats where the backend reports them."""
    out = {"host_peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    try:
        stats = jax.local_devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - CPU backends may not implement it
        stats = None
    if stats:
        out["device_peak_bytes_in_use"] = stats.get("peak_bytes_in_use")
        out["device_bytes_limit"] = stats.get("bytes_limit")
    return out


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall milliseconds of fn() (blocking on its result); fn compiled already."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return 1000.0 * statistics.median(times)


def cost_flops(compiled) -> float | None:
    """FLOPs of a compiled computation from XLA's cost analysis (None if absent)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - backends without a cost model raise
        return None
    if isinstance(cost, (list, tuple)):  # one entry per computation in older JAX
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and "flops" in cost else None
