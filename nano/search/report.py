"""The optimize() results as a table a person reads, CSV/JSON a program reads, and a bar chart."""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any, Optional

from nano.launcher.writable import unwritable_reason

from nano.search.candidates import CandidateResult, speedup


def _mb(value: Optional[int]) -> Optional[float]:
    return round(value / 2**20, 1) if value is not None else None


def result_records(results: list, baseline: Optional[CandidateResult]) -> list[dict]:
    """One flat dict per candidate, speed-up (side by side where both were in the final
    round) and accuracy change against the original, peak memory and saved size."""
    base_acc = baseline.accuracy if baseline else None
    records = []
    for r in results:
        lat = r.latency
        rec = {
            "method": r.name,
            "status": r.status,
            "latency_ms": round(lat.median * 1e3, 4) if lat else None,
            "spread_ms": round(lat.spread * 1e3, 4) if lat else None,
            "speedup": round(ratio, 3) if (ratio := speedup(r, baseline)) else None,
            "accuracy": r.accuracy,
            "accuracy_change": (round(r.accuracy - base_acc, 6)
                                if r.accuracy is not None and base_acc is not None else None),
            "output_error": r.output_error,
            "judgement": r.verdict.describe(r.method.precision) if r.verdict else None,
            "build_s": round(r.build_seconds, 2) if r.build_seconds is not None else None,
            "cost_s": round(r.cost_seconds, 2),
            "peak_mb": _mb(r.extra.get("peak_rss_bytes")),
            "size_mb": _mb(r.extra.get("artifact_bytes")),
            "detail": r.detail,
        }
        worst = r.verdict.worst(r.method.precision) if r.verdict else None
        if worst is not None and worst.top5 is not None:
            rec["top5"] = round(worst.top5, 4)
        if "side_by_side" in r.extra:
            rec["side_by_side_ms"] = round(r.extra["side_by_side"] * 1e3, 4)
            cold = r.extra.get("cold_start")
            rec["cold_start_s"] = round(cold, 4) if cold is not None else None
        if "throughput_single" in r.extra:
            rec["calls_per_s_1_instance"] = round(r.extra["throughput_single"], 2)
            rec[f"calls_per_s_{r.extra['instances']}_instances"] = round(
                r.extra["throughput_multi"], 2)
        records.append(rec)
    return records


def fmt(value: Any, spec: str = "") -> str:
    """A table cell: "-" for a missing value, floats by ``spec``."""
    if value is None:
        return "-"
    if isinstance(value, float) and spec:
        return format(value, spec)
    return str(value)


def format_table(records: list[dict]) -> str:
    """A fixed-width text table."""
    has_metric = any(r.get("accuracy") is not None for r in records)
    header = ["method", "status", "latency ms", "± IQR", "speed-up",
              "accuracy" if has_metric else "output vs original", "build s", "peak MB", "size MB"]
    final = any("side_by_side_ms" in r for r in records)
    if final:
        header += ["side by side ms", "cold start s"]
    multi_key = next((k for r in records for k in r if k.startswith("calls_per_s_")
                      and not k.endswith("_1_instance")), None)
    if multi_key:
        n = multi_key.split("_")[3]
        header += ["calls/s 1 inst", f"calls/s {n} inst"]
    header.append("detail")
    rows = []
    for r in records:
        quality = (fmt(r.get("accuracy"), ".4f") if has_metric
                   else r.get("judgement") or fmt(r.get("output_error"), ".1e"))
        row = [r["method"], r["status"], fmt(r["latency_ms"], ".3f"), fmt(r["spread_ms"], ".3f"),
               (fmt(r["speedup"], ".2f") + "x") if r["speedup"] else "-", quality,
               fmt(r["build_s"], ".1f"), fmt(r.get("peak_mb"), ".0f"),
               fmt(r.get("size_mb"), ".1f")]
        if final:
            row += [fmt(r.get("side_by_side_ms"), ".3f"), fmt(r.get("cold_start_s"), ".2f")]
        if multi_key:
            row += [fmt(r.get("calls_per_s_1_instance"), ".1f"),
                    fmt(r.get(multi_key), ".1f")]
        rows.append(row + [(r["detail"] or "")[:70]])
    return text_table(header, rows, right=set(range(2, len(header) - 1)))


def text_table(header: list, rows: list[list], right: Optional[set] = None) -> str:
    """Fixed-width columns under a header and a rule; columns in ``right`` right-aligned."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    right = right or set()

    def line(cells):
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def to_csv(records: list[dict]) -> str:
    buf = io.StringIO()
    # Some columns exist only for some rows (side-by-side and throughput figures).
    fieldnames = list(dict.fromkeys(k for r in records for k in r)) or ["method"]
    writer = csv.DictWriter(buf, fieldnames=fieldnames)
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue()


def plot(records: list[dict], path: str, title: str = "Nano optimize(): latency by method") -> None:
    """A horizontal bar chart of median latency (successful candidates), fastest on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = sorted([r for r in records if r["latency_ms"] is not None and r["status"] == "ok"],
                key=lambda r: r["latency_ms"], reverse=True)
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(ok) + 1.5))
    names = [r["method"] for r in ok]
    values = [r["latency_ms"] for r in ok]
    errs = [r["spread_ms"] / 2 for r in ok]
    bars = ax.barh(names, values, xerr=errs, color=["#4c72b0"] * (len(ok) - 1) + ["#dd8452"])
    for bar, r, err in zip(bars, ok, errs):
        if r["speedup"]:
            ax.text(bar.get_width() + err, bar.get_y() + bar.get_height() / 2,
                    f" {r['speedup']:.2f}x", va="center", fontsize=8)
    ax.set_xlabel("median latency (ms), lower is better")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


SUMMARY_EXTENSIONS = (".txt", ".csv", ".json", ".png", ".svg", ".pdf")
CHART_EXTENSIONS = (".png", ".svg", ".pdf")


def check_output_file(path: str, extensions: Optional[tuple], what: str) -> None:
    """Refuse, before any work, a path that cannot be written or (with ``extensions``)
    has an unknown extension."""
    from nano.errors import NanoValueError

    ext = os.path.splitext(path)[1].lower()
    if extensions is not None and ext not in extensions:
        raise NanoValueError(f"{what} {path!r}: unknown extension {ext or '(none)'!r}; use one "
                             f"of {', '.join(extensions)}")
    if os.path.isdir(path):
        raise NanoValueError(f"{what} {path!r} is a directory; give a file name")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise NanoValueError(f"{what} {path!r}: directory {parent!r} does not exist")
    reason = unwritable_reason(path)
    if reason:
        raise NanoValueError(f"{what} {path!r}: {reason}")


def save_records(records: list[dict], path: str) -> None:
    """Save by extension: .txt (the table), .csv, .json, or a .png/.svg/.pdf bar chart."""
    check_output_file(path, SUMMARY_EXTENSIONS, "summary file")
    ext = os.path.splitext(path)[1].lower()
    if ext in CHART_EXTENSIONS:
        plot(records, path)
        return
    text = (to_csv(records) if ext == ".csv" else json.dumps(records, indent=2) + "\n"
            if ext == ".json" else format_table(records) + "\n")
    with open(path, "w") as f:
        f.write(text)
