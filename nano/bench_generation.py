"""``bigdl-nano-bench --generate``: pick the fastest text-generation candidate of a causal LM.

    bigdl-nano-bench --generate ./my-hf-model --held-out plays.txt --prompt "ROMEO." --save fast/
    bigdl-nano-bench --generate nano.models.shakespeare_lm:load_shakespeare_lm --held-out t.txt

The model is a Hugging Face directory (``save_pretrained`` of the model and its tokenizer,
read offline) or ``package.module:factory`` returning ``(tokenizer, model)``. Exit status 0
with a pick, 1 when the original could not run, 2 on a usage error (one line, before any
model is built).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from typing import Any

from nano.launcher.cli_common import OneLineParser, UsageError, positive_int


def parser() -> OneLineParser:
    p = OneLineParser(prog="bigdl-nano-bench --generate", description=__doc__.splitlines()[0])
    p.add_argument("--generate", required=True, metavar="MODEL",
                   help="a Hugging Face model directory, or package.module:factory returning "
                        "(tokenizer, model)")
    p.add_argument("--held-out", required=True, metavar="FILE",
                   help="text the model was not trained on: perplexity windows, and prompts "
                        "when no --prompt is given")
    p.add_argument("--prompt", action="append", help="a held-out prompt (repeatable)")
    p.add_argument("--methods", help="comma list, e.g. openvino_int4,torchao_int8")
    p.add_argument("--new-tokens", type=positive_int, default=32)
    p.add_argument("--batch", type=positive_int, default=4,
                   help="the small batch timed besides batch 1 (default 4)")
    p.add_argument("--threads", type=positive_int)
    p.add_argument("--save", metavar="DIR", help="save the pick here")
    p.add_argument("--format", choices=("table", "json"), default="table")
    return p


def load_lm_source(source: str) -> tuple:
    """(tokenizer, model) from a directory or a factory; a UsageError saying what is wrong."""
    if os.path.isdir(source):
        if not os.path.exists(os.path.join(source, "config.json")):
            raise UsageError(f"{source!r} has no config.json: give a directory written by "
                             f"save_pretrained (model and tokenizer)")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            return (AutoTokenizer.from_pretrained(source),
                    AutoModelForCausalLM.from_pretrained(source).eval())
        except (OSError, ValueError) as e:
            raise UsageError(f"{source!r} did not load as a causal LM with its tokenizer: "
                             f"{str(e).splitlines()[0]}") from None
    if ":" not in source:
        raise UsageError(f"{source!r} is neither a directory nor package.module:factory")
    module_name, _, attr = source.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise UsageError(f"cannot import {source!r}: {e}") from None
    made = factory()
    if not (isinstance(made, tuple) and len(made) == 2):
        raise UsageError(f"{source} must return (tokenizer, model), got {type(made).__name__}")
    return made


def generate_main(argv: list[str]) -> int:
    """The ``--generate`` mode of ``bigdl-nano-bench``."""
    args = parser().parse_args(argv)
    if not os.path.isfile(args.held_out):
        raise UsageError(f"--held-out {args.held_out!r} is not a file")
    with open(args.held_out, errors="replace") as f:
        text = f.read()
    prompts = args.prompt or [line for line in text.splitlines() if line.strip()][:4]
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
    from nano.errors import NanoError, SearchFailed
    from nano.generation.build import lm_method
    from nano.runtimes.model_files import check_save_path

    try:
        for name in methods or []:
            lm_method(name)
        if args.save:
            check_save_path(args.save)
    except NanoError as e:
        raise UsageError(str(e)) from None
    tokenizer, model = load_lm_source(args.generate)
    from nano import InferenceOptimizer

    started = time.monotonic()
    try:
        search = InferenceOptimizer.optimize_generation(
            model, tokenizer, prompts, text, methods, new_tokens=args.new_tokens,
            batches=(1, args.batch) if args.batch > 1 else (1,), thread_num=args.threads)
    except SearchFailed as e:
        print(f"bigdl-nano-bench: {e}", file=sys.stderr)
        return 1
    except NanoError as e:  # found before any candidate was built
        raise UsageError(str(e)) from None
    best = search.best_row()
    if args.format == "json":
        json.dump({"model": args.generate, "pick": best.method,
                   "seconds": round(time.monotonic() - started, 1),
                   "results": [_record(r) for r in search.rows]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(search.summary())
    if args.save:
        InferenceOptimizer.save(search.best(), args.save)
        info = sys.stderr if args.format == "json" else sys.stdout
        print(f"saved {best.method} to {args.save}; load it with:\n  from nano import "
              f"InferenceOptimizer\n  model = InferenceOptimizer.load({args.save!r})", file=info)
    return 0


def _record(row: Any) -> dict:
    return {"method": row.method, "status": row.status, "detail": row.detail,
            "agreement": row.agreement, "perplexity": row.perplexity,
            "speeds": [{"batch": s.batch, "first_token_s": s.first_token_s,
                        "decode_tokens_per_s": s.decode_tokens_per_s} for s in row.speeds],
            "size_bytes": row.size_bytes, "peak_memory_bytes": row.peak_memory_bytes,
            "limit_tokens_per_s": row.limit_tokens_per_s, "bytes_per_step": row.bytes_per_step,
            "bandwidth_bytes_per_s": row.bandwidth, "bandwidth_from": row.bandwidth_from,
            "side_by_side_tokens_per_s": row.side_by_side}
