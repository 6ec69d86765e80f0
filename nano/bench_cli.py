"""``bigdl-nano-bench``: optimize a saved model or a factory, print the table, keep the fastest.

    bigdl-nano-bench model.pt --input-shape 1,3,224,224 --save fast/
    bigdl-nano-bench mypkg.models:make_net --input-shape 1,128 --dtype int64 --format json
    bigdl-nano-bench model.onnx --input-shape 8,3,32,32 --baselines --plot table.png
    bigdl-nano-bench --generate ./hf-causal-lm --held-out text.txt   (see nano.bench_generation)

Exit status 0 with a pick, 1 when no method ran, 2 on a usage error (one line).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Optional, Sequence

from nano.launcher.capability import current
from nano.launcher.cli_common import (OneLineParser, UsageError, positive_float, positive_int,
                                      run_cli)

_DTYPES = ("float32", "float16", "bfloat16", "int64", "int32", "bool")


def parse_shape(text: str) -> tuple:
    """"1,3,224,224" -> (1, 3, 224, 224); a UsageError for anything else."""
    import re

    shape = (tuple(int(p) for p in re.split(r"[,x]", text.strip()))
             if re.fullmatch(r"\d+([,x]\d+)*", text.strip()) else ())
    if not shape or any(d < 1 for d in shape):
        raise UsageError(f"bad --input-shape {text!r}: give positive sizes like 1,3,224,224")
    return shape


def random_inputs(shapes: Sequence[Sequence[int]], dtypes: Sequence[str], seed: int) -> tuple:
    """Inputs of the given shapes: normal floats, small non-negative integers, or all-True."""
    import torch

    g = torch.Generator().manual_seed(seed)
    out = []
    for shape, dtype in zip(shapes, dtypes):
        dt = getattr(torch, dtype)
        if dt.is_floating_point:
            out.append(torch.randn(shape, generator=g).to(dt))
        elif dt == torch.bool:
            out.append(torch.ones(shape, dtype=dt))
        else:
            out.append(torch.randint(0, 100, shape, generator=g, dtype=dt))
    return tuple(out)


def _parser() -> OneLineParser:
    p = OneLineParser(prog="bigdl-nano-bench", description=__doc__.splitlines()[0])
    p.add_argument("model", help="TorchScript .pt, exported .pt2, .onnx, or package.module:factory")
    p.add_argument("--input-shape", action="append", required=True, metavar="SHAPE",
                   help="one per model input, e.g. 1,3,224,224")
    p.add_argument("--dtype", action="append", choices=_DTYPES,
                   help="one per input (default float32)")
    p.add_argument("--calib", type=int, default=4, metavar="N",
                   help="random calibration batches for INT8 (0: skip INT8)")
    p.add_argument("--accelerator", help="comma list: pytorch,jit,compile,onnxruntime,openvino")
    p.add_argument("--precision", help="comma list: fp32,bf16,fp16,int8")
    p.add_argument("--save", metavar="DIR", help="save the fastest model here")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--plot", metavar="PNG", help="draw the latency chart")
    p.add_argument("--baselines", action="store_true",
                   help="also time a plain ONNX Runtime session and a plain OpenVINO compile")
    p.add_argument("--threads", type=positive_int)
    p.add_argument("--timeout", type=positive_float, default=300,
                   help="seconds per method, and for the first check that the model runs "
                        "(default 300)")
    p.add_argument("--latency-samples", type=positive_int, default=100)
    p.add_argument("--time-budget", type=positive_float, metavar="SECONDS",
                   help="start no method once this is spent; the rows not tried say so")
    p.add_argument("--all", action="store_true",
                   help="try every method (default: likely winners first, leaving out the "
                        "ones that cannot win, each row saying why)")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="keep built candidates here for the next run (default ~/.cache/nano)")
    p.add_argument("--no-cache", action="store_true", help="build every candidate afresh")
    p.add_argument("--accuracy", choices=("rel_l2", "top1", "cosine", "kind"), default="rel_l2",
                   help="how outputs are judged against the original's (default rel_l2: the "
                        "inputs are random, and a classifier's top-1 on noise says little; "
                        "'kind': by what each output is, as optimize() does)")
    p.add_argument("--latency-target-ms", type=positive_float, metavar="MS",
                   help="stop at the first method at or under this latency that keeps the "
                        "outputs within tolerance")
    return p


def _check_outputs(args) -> None:
    """Every output path must be writable before the search starts, not after it."""
    from nano.errors import NanoValueError
    from nano.runtimes.model_files import check_save_path
    from nano.search.report import CHART_EXTENSIONS, check_output_file

    try:
        if args.save:
            check_save_path(args.save)
        if args.plot:
            check_output_file(args.plot, CHART_EXTENSIONS, "--plot")
    except NanoValueError as e:
        raise UsageError(str(e)) from None
    if args.cache_dir:
        from nano.launcher.writable import unwritable_reason

        reason = unwritable_reason(os.path.join(args.cache_dir, "builds"))
        if reason:
            raise UsageError(f"--cache-dir {args.cache_dir!r} cannot be written: {reason}")


def _run_sample(_task) -> None:
    """In an isolated child: one call of the model on the sample (the payload)."""
    import torch

    from nano.search import isolation

    model, sample = isolation.SHARED
    with torch.no_grad():
        model(*sample)


def _check_model_runs(model, sample, shapes, timeout: float) -> Optional[str]:
    """Call the model once in a child process under ``timeout``. Raises UsageError when it
    raises (the inputs do not fit); returns why when it hangs or crashes, else None."""
    from nano.search.isolation import Zygote

    with Zygote((model, sample)) as zygote:
        outcome = zygote.run(_run_sample, None, timeout)
    shown = ", ".join(map(str, shapes))
    if outcome.status == "failed":
        raise UsageError(f"the model does not run on inputs of shape {shown}: "
                         f"{outcome.detail.splitlines()[0]}")
    if outcome.status != "ok":
        return f"the model did not run on inputs of shape {shown}: {outcome.detail}"
    return None


def _baselines(model, args, threads) -> list[dict]:
    """Time the hand-driven runtimes in this process, like optimize() times its candidates."""
    from nano.runtimes.baselines import hand_onnxruntime, hand_openvino
    from nano.runtimes.error_summary import summarize_error
    from nano.search.measure import measure_latency

    rows = []
    for name, make in (("baseline: plain ORT session", lambda: hand_onnxruntime(model, args,
                                                                                 threads)),
                       ("baseline: plain OpenVINO compile", lambda: hand_openvino(model, args,
                                                                                   threads))):
        try:
            lat = measure_latency(make(), 100, 5.0)
            rows.append({"method": name, "status": "ok", "latency_ms": round(lat.median * 1e3, 4),
                         "spread_ms": round(lat.spread * 1e3, 4)})
        except Exception as e:
            rows.append({"method": name, "status": "failed", "latency_ms": None,
                         "spread_ms": None, "detail": summarize_error(e)})
    return rows


def _main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    shapes = [parse_shape(s) for s in args.input_shape]
    dtypes = args.dtype or ["float32"] * len(shapes)
    if len(dtypes) == 1 and len(shapes) > 1:
        dtypes = dtypes * len(shapes)
    if len(dtypes) != len(shapes):
        raise UsageError(f"{len(shapes)} --input-shape but {len(dtypes)} --dtype; give one each "
                         f"or a single --dtype for all")
    if args.calib < 0:
        raise UsageError("--calib must be 0 or more")
    _check_outputs(args)
    from nano.runtimes.registry import normalize_accelerator
    from nano.runtimes.methods import normalize_precision
    from nano.runtimes.sources import SourceError, load_source
    from nano.runtimes.registry import applicable_accelerators

    try:
        accelerators = ([normalize_accelerator(a.strip()) for a in args.accelerator.split(",")]
                        if args.accelerator else None)
        precisions = ([normalize_precision(p.strip()) for p in args.precision.split(",")]
                      if args.precision else None)
    except ValueError as e:
        raise UsageError(str(e)) from None
    try:
        model = load_source(args.model)
    except SourceError as e:
        raise UsageError(str(e)) from None
    allowed = applicable_accelerators(model)
    if allowed:
        accelerators = [a for a in (accelerators or allowed) if a in allowed] or list(allowed)
    if args.calib == 0:
        precisions = [p for p in (precisions or ["fp32", "bf16", "fp16"]) if p != "int8"]
    sample = random_inputs(shapes, dtypes, 0)
    problem = _check_model_runs(model, sample, shapes, args.timeout)
    if problem:
        print(f"bigdl-nano-bench: {problem}", file=sys.stderr)
        return 1
    data = [sample] + [random_inputs(shapes, dtypes, i + 1) for i in range(max(args.calib, 1))]

    from nano import InferenceOptimizer
    from nano.errors import SearchFailed
    from nano.search import report

    opt = InferenceOptimizer()
    started = time.time()
    try:
        opt.optimize(model, data, thread_num=args.threads, accelerator=accelerators,
                     precision=precisions, timeout_per_method=args.timeout,
                     latency_sample_num=args.latency_samples, latency_budget=5.0,
                     time_budget=args.time_budget, no_cache=args.no_cache,
                     search_mode="all" if args.all else "default",
                     cache_dir=args.cache_dir,
                     accuracy=None if args.accuracy == "kind" else args.accuracy,
                     latency_target=None if args.latency_target_ms is None
                     else args.latency_target_ms / 1e3)
    except SearchFailed as e:
        print(report.format_table(opt.records()), file=sys.stderr)
        print(f"\nbigdl-nano-bench: {e}", file=sys.stderr)
        return 1
    records = opt.records()
    if args.baselines:
        base = records[0]["latency_ms"]  # the original
        for row in _baselines(model, sample, opt.thread_num):
            full: dict[str, Any] = {key: None for key in records[0]}
            full.update({"detail": "", "cost_s": 0.0, **row})
            if row["latency_ms"]:
                full["speedup"] = round(base / row["latency_ms"], 3)
            records.append(full)
    try:
        best, description = opt.get_best_model()
    except RuntimeError:
        best, description = None, "no method ran successfully"
    out = sys.stdout
    if args.format == "json":
        json.dump({"model": args.model, "pick": best.method.name if best else None,
                   "seconds": round(time.time() - started, 1), "results": records}, out,
                  indent=2)
        out.write("\n")
    elif args.format == "csv":
        out.write(report.to_csv(records))
    else:
        out.write(report.format_table(records) + "\n")
    info = sys.stderr if args.format != "table" else sys.stdout
    capability = current()
    print(f"\nCPU: {'; '.join(capability.describe()[:3])}", file=info)
    print(f"fastest within tolerance: {description}", file=info)
    if args.plot:
        report.plot(records, args.plot)
    if best is not None and args.save:
        InferenceOptimizer.save(best, args.save)
        needs = ", model=<the original module>" if best.needs_model_to_load else ""
        print(f"saved to {args.save}; load it with:\n  from nano import InferenceOptimizer\n"
              f"  model = InferenceOptimizer.load({args.save!r}{needs})", file=info)
    return 0 if best is not None else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``bigdl-nano-bench``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--generate" or a.startswith("--generate=") for a in args):
        from nano.bench_generation import generate_main

        return run_cli(generate_main, args, "bigdl-nano-bench")
    return run_cli(_main, argv, "bigdl-nano-bench")


if __name__ == "__main__":
    sys.exit(main())
