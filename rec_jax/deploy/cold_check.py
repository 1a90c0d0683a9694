r"""New items through the service, checked against the offline evaluation.

    python -m rec_jax.deploy.cold_check --workdir=workdir/coldstart \
        --model=mf_kd_transfer_fusion [--bundle=/tmp/cold_bundle]

On a finished `cold_items` job: exports the fused student with its cold items
held out (``--hold_out=cold``), starts the service on that bundle, adds
every cold item through ``POST /items`` (title, year and genres only: the
vector comes from the bundle's text path), then asks ``GET /recommend`` for
every test user, over all items and with ``new_only=true``, and computes
cold Recall@10 (cold test items ranked among all items) and cold-only
Recall@10 (ranked among the cold items) exactly as the evaluator does (users
with at least one cold test item; hits / their cold test items). Prints both
next to the offline numbers in ``<workdir>/<model>/results.json`` and exits
1 when they differ by more than --tolerance.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from collections import defaultdict

from rec_jax import console, errors
from rec_jax.deploy import export, service, trained


def _read_csv(path: str) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def service_recalls(client, test_rows: list[dict], cold: set[str], k: int = 10) -> dict:
    """Cold and cold-only Recall@k of the service's answers (the evaluator's definition)."""
    truth = defaultdict(set)
    for r in test_rows:
        if r["item_id"] in cold:
            truth[r["user_id"]].add(r["item_id"])
    sums = {"cold/recall@10": 0.0, "cold_only/recall@10": 0.0}
    for user, items in truth.items():
        for key, new_only in (("cold/recall@10", "false"), ("cold_only/recall@10", "true")):
            got = client.get("/recommend", params={"user_id": user, "k": k, "new_only": new_only})
            got.raise_for_status()
            top = [it["item_id"] for it in got.json()["items"]]
            sums[key] += len(items & set(top)) / len(items)
    return {key: v / len(truth) for key, v in sums.items()} | {"users": len(truth)}


def run(workdir: str, model: str, bundle: str, tolerance: float = 1e-4) -> dict:
    from fastapi.testclient import TestClient

    t = time.time()
    student = trained.load(workdir, model)
    export.export(student, bundle, max_new_items=len(student.item_ids), hold_out="cold")
    export_s = time.time() - t
    meta = json.load(open(os.path.join(bundle, "meta.json")))
    cold_items = {r["item_id"] for r in _read_csv(os.path.join(workdir, "split",
                                                               "cold_items.csv"))}
    held = {meta["items"][r]["item_id"] for r in meta["held_out_rows"]}
    if cold_items != held:
        raise SystemExit(f"error: the held-out items ({len(held)}) are not the split's cold "
                         f"items ({len(cold_items)}): is {workdir} a cold_items job?")
    by_id = {it["item_id"]: it for it in meta["items"]}
    with TestClient(service.create_app(bundle)) as client:
        t = time.time()
        add_ms = []
        for item_id in sorted(cold_items, key=int):
            it = by_id[item_id]
            t1 = time.time()
            client.post("/items", json={"item_id": item_id, "title": it["title"],
                                        "year": it["year"], "genres": it["genres"]}
                        ).raise_for_status()
            add_ms.append(1e3 * (time.time() - t1))
        add_s = time.time() - t
        got = service_recalls(client, _read_csv(os.path.join(workdir, "split", "test.csv")),
                              cold_items)
    with open(os.path.join(workdir, model, "results.json")) as f:
        offline = json.load(f)["test"]
    add_ms.sort()
    out = {"model": model, "cold_items": len(cold_items), "users": got["users"],
           "export_s": export_s, "add_s": add_s, "add_ms_p50": add_ms[len(add_ms) // 2],
           "rows": {k: (got[k], offline[k]) for k in ("cold/recall@10", "cold_only/recall@10")}}
    out["max_diff"] = max(abs(a - b) for a, b in out["rows"].values())
    out["ok"] = out["max_diff"] <= tolerance
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m rec_jax.deploy.cold_check",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--model", default="mf_kd_transfer_fusion")
    parser.add_argument("--bundle", default=None, help="(default: a temporary folder)")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args(argv)
    console.quiet_third_party()  # before TensorFlow loads (lazily)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            out = run(args.workdir, args.model, args.bundle or os.path.join(tmp, "bundle"),
                      args.tolerance)
        except errors.UserError as e:
            errors.fail(e)
    print(f"{out['model']}: {out['cold_items']} cold items added through POST /items in "
          f"{out['add_s']:.1f} s (p50 {out['add_ms_p50']:.1f} ms per item); "
          f"{out['users']} test users with cold test items\n")
    print("| metric | through the service | offline evaluation | difference |")
    print("|---|---|---|---|")
    for key, (a, b) in out["rows"].items():
        print(f"| {key} | {a:.6f} | {b:.6f} | {abs(a - b):.1e} |")
    print(f"\n{'equal' if out['ok'] else 'DIFFERENT'} within {args.tolerance:g}")
    sys.exit(0 if out["ok"] else 1)


if __name__ == "__main__":
    main()
