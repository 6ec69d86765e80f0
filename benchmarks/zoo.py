"""optimize() on every model of the zoo (nano/models/zoo.py), one table.

For each model at ``--batch`` (default 1): how the rows ended (ok / drift / failed / crashed /
slow / skipped / unavailable), the best speed-up over eager of each precision among the rows
that pass the default judgement (side by side with the original where the final round timed
them; each row's output error in brackets), the pick and the search's seconds. Random
weights: the judgement is the default output-error one (#12 will judge by output kind).

    python benchmarks/zoo.py [--batch 1] [--models bert,resnet18] [--all] [--csv zoo.csv]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import warnings
from collections import Counter


def search(name: str, batch: int, mode: str) -> dict:
    from nano import InferenceOptimizer
    from nano.models.zoo import ZOO, build

    model, sample = build(name, batch)
    data = [ZOO[name].sample(batch) for _ in range(8)]
    opt = InferenceOptimizer()
    start = time.perf_counter()
    opt.optimize(model, data, input_sample=sample, latency_sample_num=30, latency_budget=3,
                 search_mode=mode)
    seconds = time.perf_counter() - start
    rows = {r.name: r for r in opt.results}
    records = {rec["method"]: rec for rec in opt.records()}
    best = {}
    for precision in ("fp32", "bf16", "int8"):
        try:
            model_p, _ = opt.get_best_model(precision=precision)
        except RuntimeError:
            best[precision] = "-"
            continue
        name_p = model_p.method.name
        err = rows[name_p].output_error
        best[precision] = (f"{records[name_p]['speedup'] or 1.0:.2f}x {name_p} "
                           f"({'-' if err is None else f'{err:.0e}'})")
    pick, _ = opt.get_best_model()
    statuses = Counter(r.status for r in opt.results)
    return {"model": name, "family": ZOO[name].family,
            "rows": " ".join(f"{k} {v}" for k, v in sorted(statuses.items())),
            **{f"best {p}": v for p, v in best.items()},
            "pick": f"{pick.method.name} {records[pick.method.name]['speedup'] or 1.0:.2f}x",
            "seconds": round(seconds, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--models", help="comma list (default: every available zoo model)")
    parser.add_argument("--all", action="store_true", help="search_mode='all'")
    parser.add_argument("--csv", metavar="PATH", help="also write the table here")
    args = parser.parse_args()
    from nano.models.zoo import ZOO

    names = args.models.split(",") if args.models else [
        n for n, e in ZOO.items() if e.unavailable_reason() is None]
    warnings.filterwarnings("ignore")
    table = []
    for name in names:
        print(f"  {name} ...", file=sys.stderr, flush=True)
        table.append(search(name, args.batch, "all" if args.all else "default"))
    columns = list(table[0])
    print(f"\nzoo, batch {args.batch}, search_mode={'all' if args.all else 'default'}\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join(" --- " for _ in columns) + "|")
    for row in table:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
