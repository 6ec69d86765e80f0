"""optimize() on every model of the zoo (nano/models/zoo.py), one table.

For each model, at batch 1 and at a throughput batch (default 16): how the rows ended
(ok / drift / failed / crashed / slow / skipped / unavailable), the best speed-up over
eager of each precision among the rows that pass the default judgement (side by side with
the original where the final round timed them) with that judgement (top-1 agreement,
smallest cosine or relative L2 error against the fp32 original, on 64 held-out rows),
the fp32 rows that are not ok and why, the pick and the search's seconds. Then the two
targets of #12: every fp32 candidate ok (or naming what the runtime lacks), and an INT8
candidate passing on at least 80% of the models.

    python benchmarks/zoo.py [--batches 1,16] [--models bert,resnet18] [--all] [--csv zoo.csv]
                             [--rows rows.csv]

Random weights: these judge the runtimes against the fp32 original, not a task.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import warnings
from collections import Counter

HELD_OUT_ROWS, HELD_OUT_BATCH = 64, 16
CALIBRATION_BATCHES = 16


def search(name: str, batch: int, mode: str, every_row: list) -> dict:
    from nano import InferenceOptimizer
    from nano.models.zoo import ZOO, build

    model, sample = build(name, batch)
    entry = ZOO[name]
    training = [entry.sample(batch) for _ in range(CALIBRATION_BATCHES)]
    held_out = [entry.sample(HELD_OUT_BATCH) for _ in range(HELD_OUT_ROWS // HELD_OUT_BATCH)]
    opt = InferenceOptimizer()
    start = time.perf_counter()
    opt.optimize(model, training, validation_data=held_out, input_sample=sample,
                 latency_sample_num=30, latency_budget=3, search_mode=mode)
    seconds = time.perf_counter() - start
    records = {rec["method"]: rec for rec in opt.records()}
    for r in opt.results:  # what the default tolerances were calibrated on
        worst = r.verdict.worst(r.method.precision) if r.verdict else None
        every_row.append({"model": name, "batch": batch, "method": r.name, "status": r.status,
                          "precision": r.method.precision, "speedup": records[r.name]["speedup"],
                          "judgement": worst.kind if worst else None,
                          "error": worst.error if worst else None,
                          "top5": worst.top5 if worst else None})
    best = {}
    for precision in ("fp32", "bf16", "int8"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model_p, _ = opt.get_best_model(precision=precision)
        except RuntimeError:
            best[precision] = "-"
            continue
        rec = records[model_p.method.name]
        best[precision] = (f"{rec['speedup'] or 1.0:.2f}x {rec['method']} "
                           f"({rec['judgement'] or '-'})")
    pick, _ = opt.get_best_model()
    statuses = Counter(r.status for r in opt.results)
    fp32_not_ok = [f"{r.name}: {r.status}, {r.detail[:80]}" for r in opt.results
                   if r.method.precision == "fp32" and r.status in ("failed", "crashed", "drift",
                                                                     "timeout", "memory")]
    int8_passes = best["int8"] != "-"
    int8_tried = [r for r in opt.results if r.method.precision == "int8" and r.usable]
    best_int8_judged = min((r for r in int8_tried if r.verdict), default=None,
                           key=lambda r: r.output_error)
    return {"model": name, "batch": batch, "family": entry.family,
            "rows": " ".join(f"{k} {v}" for k, v in sorted(statuses.items())),
            **{f"best {p}": v for p, v in best.items()},
            "int8 passes": "yes" if int8_passes else (
                f"no (closest {best_int8_judged.name}: "
                f"{records[best_int8_judged.name]['judgement']})" if best_int8_judged else "no"),
            "fp32 not ok": "; ".join(fp32_not_ok) or "-",
            "pick": f"{pick.method.name} {records[pick.method.name]['speedup'] or 1.0:.2f}x",
            "seconds": round(seconds, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,16", help="comma list (default 1,16)")
    parser.add_argument("--models", help="comma list (default: every available zoo model)")
    parser.add_argument("--all", action="store_true", help="search_mode='all'")
    parser.add_argument("--csv", metavar="PATH", help="also write the table here")
    parser.add_argument("--rows", metavar="PATH",
                        help="write every candidate's row (judgement and error) here as CSV")
    args = parser.parse_args()
    from nano.models.zoo import ZOO

    names = args.models.split(",") if args.models else [
        n for n, e in ZOO.items() if e.unavailable_reason() is None]
    batches = [int(b) for b in args.batches.split(",")]
    warnings.filterwarnings("ignore")
    table: list = []
    every_row: list = []
    for batch in batches:
        for name in names:
            print(f"  {name}, batch {batch} ...", file=sys.stderr, flush=True)
            table.append(search(name, batch, "all" if args.all else "default", every_row))
    columns = list(table[0])
    print(f"\nzoo, search_mode={'all' if args.all else 'default'}, judged on "
          f"{HELD_OUT_ROWS} held-out rows\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join(" --- " for _ in columns) + "|")
    for row in table:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    for batch in batches:
        rows = [r for r in table if r["batch"] == batch]
        passing = sum(r["int8 passes"] == "yes" for r in rows)
        fp32_ok = sum(r["fp32 not ok"] == "-" for r in rows)
        print(f"\nbatch {batch}: an INT8 candidate passes on {passing} of {len(rows)} models "
              f"({passing / len(rows):.0%}; target 80%); every fp32 candidate ok on "
              f"{fp32_ok} of {len(rows)}")
    for path, rows in ((args.csv, table), (args.rows, every_row)):
        if path:
            with open(path, "w", newline="") as f:
                writer = csv.DictWriter(f, list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
