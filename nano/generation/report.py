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
            "% of limit", "size (MB)", "peak mem (MB)"]
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
            _fmt(r.size_bytes / 1e6 if r.size_bytes else None, ".1f"),
            _fmt(r.peak_memory_bytes / 1e6 if r.peak_memory_bytes else None, ".0f")])
    lines = [text_table(head, rows)]
    notes = [f"{r.method}: {r.detail}" for r in search.rows if r.detail]
    if search.bandwidth:
        lines.append(f"memory bandwidth: {search.bandwidth / 1e9:.1f} GB/s (shown by "
                     f"{search.bandwidth_from}); '% of limit' is decode tokens/s at batch "
                     f"{first} over bandwidth / bytes each step reads (weights + KV cache)")
    lines.append(f"agreement: share of the original's greedy tokens (first "
                 f"{options.new_tokens} of each held-out prompt) the candidate also ranks first; "
                 f"kept: >= {options.min_agreement} and perplexity within "
                 f"+{options.max_perplexity_increase:.0%}")
    best = search.best_row()
    lines.append(f"pick: {best.method}")
    return "\n".join(lines + notes)
