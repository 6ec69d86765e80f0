"""The table ``optimize_generation`` prints: one row per candidate, speeds as ratios to the
original, and each row's share of the limit memory bandwidth sets."""

from __future__ import annotations

from typing import Any

from nano.search.report import fmt as _fmt, text_table


def render(search: Any) -> str:
    """The summary table of a finished ``GenerationSearch``."""
    options = search.options
    first, *more = options.batches
    original = search.result("pytorch_fp32")
    base = original.speed(first).decode_tokens_per_s if original and original.speed(first) \
        else None
    head = ["method", "status", "agreement", "perplexity", f"first token b{first} (ms)",
            f"decode tok/s b{first}", *[f"decode tok/s b{b}" for b in more], "x fp32",
            "% of limit", "limit GB/s", "size (MB)", "peak mem (MB)"]
    rows = []
    for r in search.rows:
        speed = r.speed(first)
        tps = speed.decode_tokens_per_s if speed else None
        rows.append([
            r.method, r.status, _fmt(r.agreement, ".3f"), _fmt(r.perplexity, ".2f"),
            _fmt(speed.first_token_s * 1000 if speed else None, ".1f"), _fmt(tps, ".1f"),
            *[_fmt(r.speed(b).decode_tokens_per_s if r.speed(b) else None, ".1f") for b in more],
            _fmt(tps / base if tps and base else None, ".2f"),
            _fmt(100 * tps / r.limit_tokens_per_s if tps and r.limit_tokens_per_s else None,
                 ".0f"),
            _fmt(r.bandwidth / 1e9 if r.bandwidth else None, ".1f"),
            _fmt(r.size_bytes / 1e6 if r.size_bytes else None, ".1f"),
            _fmt(r.peak_memory_bytes / 1e6 if r.peak_memory_bytes else None, ".0f")])
    lines = [text_table(head, rows)]
    notes = [f"{r.method}: {r.detail}" for r in search.rows if r.detail]
    if any(r.bandwidth for r in search.rows):
        lines.append(f"'% of limit': decode tokens/s at batch {first} over limit GB/s / bytes "
                     f"each step reads (weights + KV cache); limit GB/s: the most a read of "
                     f"as many bytes streamed here (from a CPU cache where they fit), or a "
                     f"decode of as many or more")
        raised = [f"{r.method} ({r.bandwidth_from})" for r in search.rows
                  if r.bandwidth_from.endswith("decode")]
        if raised:
            lines.append("limit GB/s set by a decode: " + ", ".join(raised))
    lines.append(f"agreement: share of the original's greedy tokens (first "
                 f"{options.new_tokens} of each held-out prompt) the candidate also ranks first; "
                 f"kept: >= {options.min_agreement} and perplexity within "
                 f"+{options.max_perplexity_increase:.0%}")
    again = [r for r in search.rows if r.side_by_side]
    if again:
        lines.append(f"timed again side by side (batch {first}, the median of alternating "
                     f"rounds in one process), as close to the fastest: "
                     + ", ".join(f"{r.method} {r.side_by_side:.1f} tok/s" for r in again))
    best = search.best_row()
    lines.append(f"pick: {best.method}")
    return "\n".join(lines + notes)
