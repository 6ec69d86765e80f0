"""Text generation on this CPU: every candidate against eager fp32 ``generate()``, in one run.

Two parts, because accuracy needs real weights and speed needs a realistic size:

1. **Accuracy**, on the Shakespeare LM Nano trains (``nano.models.shakespeare_lm``, 4 M
   parameters, real text): ``optimize_generation`` judges every candidate by greedy-token
   agreement over 32 new tokens of held-out prompts and by perplexity on two held-out plays.
2. **Speed**, on Llama-style configurations with random weights: 0.43 B parameters
   (hidden 1024, 24 layers, 16 heads, 4 key/value heads, MLP 4096, vocabulary 32,000),
   whose INT4 step (216 MB) fits a large server CPU's last-level cache, and 1.1 B
   (TinyLlama's shape: hidden 2048, 22 layers, 32 heads, 4 key/value heads, MLP 5632),
   whose INT4 step (about 570 MB) is read from memory: time to first token of a 64-token
   prompt, decode tokens/s at batch 1 and 4, size, peak memory, and each candidate's share
   of the limit bandwidth sets (bandwidth / bytes a decode step reads, the bandwidth read
   at that many bytes). Only the methods the accuracy part kept are eligible as the pick.

Targets (issue #27): the pick decodes >= 4x eager fp32 at batch 1 with agreement >= 0.9,
reaches >= 60% of its bandwidth limit, and its time to first token is no worse than eager
fp32's.

Every row runs in ``bigdl-nano-init``'s environment (the benchmark re-runs itself under it,
as a user runs ``bigdl-nano-init -- python app.py``), eager fp32 included, so the ratios
are of the runtimes, not of the environment; ``--as-is`` keeps the caller's environment.

    python benchmarks/generation.py [--sizes 0.43b,1.1b] [--skip-accuracy] [--as-is]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import torch


# hidden size, layers, attention heads, MLP width of each speed model
SPEED_MODELS = {"0.43b": (1024, 24, 16, 4096), "1.1b": (2048, 22, 32, 5632)}


def speed_model(size: str) -> torch.nn.Module:
    """A Llama-style model the speed part times (random weights: only speed is read)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, layers, heads, mlp = SPEED_MODELS[size]
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32000, hidden_size=hidden, intermediate_size=mlp,
                         num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=4, max_position_embeddings=2048, bos_token_id=0,
                         eos_token_id=0, pad_token_id=0, tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval()


def under_nano_init(as_is: bool) -> str:
    """Re-run this script under bigdl-nano-init's environment unless it already is (or
    ``as_is``); return a line describing the environment."""
    from nano.launcher.environment import SAVED_VAR, apply_plan, plan_environment
    from nano.launcher.topology import read_topology

    if as_is:
        return "as given (--as-is)"
    if SAVED_VAR not in os.environ:
        plan = plan_environment(read_topology(), os.environ)
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, __file__, *sys.argv[1:]],
                  apply_plan(plan, os.environ))
    shown = ("LD_PRELOAD", "MALLOC_CONF", "GLIBC_TUNABLES", "THP_MEM_ALLOC_ENABLE",
             "OMP_NUM_THREADS")
    return "bigdl-nano-init's: " + ", ".join(f"{k}={os.environ[k]}" for k in shown
                                              if k in os.environ)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default=",".join(SPEED_MODELS),
                   help=f"speed models, comma-separated from {', '.join(SPEED_MODELS)}")
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--as-is", action="store_true",
                   help="run in this environment instead of bigdl-nano-init's")
    args = p.parse_args()
    sizes = args.sizes.split(",")
    if not set(sizes) <= set(SPEED_MODELS):
        p.error(f"--sizes takes {', '.join(SPEED_MODELS)}; got {args.sizes}")
    tuned = under_nano_init(args.as_is)

    print(f"environment: {tuned}\n")

    from nano import InferenceOptimizer
    from nano.generation.build import DEFAULT_METHODS
    from nano.models.shakespeare_lm import PROMPTS, held_out_text, load_shakespeare_lm
    from nano.noise import quiet_third_party

    methods = [*DEFAULT_METHODS, "compile_fp32", "onnxruntime_fp32"]  # on request in optimize
    started = time.monotonic()
    with quiet_third_party("transformers"):
        tokenizer, small = load_shakespeare_lm("small")
    kept = None
    if not args.skip_accuracy:
        print("1. accuracy: the Shakespeare LM (4 M parameters, trained on real text)\n")
        accuracy = InferenceOptimizer.optimize_generation(small, tokenizer, PROMPTS,
                                                          held_out_text(), methods,
                                                          new_tokens=32)
        print(accuracy.summary())
        kept = {r.method for r in accuracy.rows if r.status == "ok"}

    for number, size in enumerate(sizes, start=2):
        speed_part(number, speed_model(size), tokenizer, methods, kept)
    print(f"benchmark time: {time.monotonic() - started:.0f} s")
    return 0


def speed_part(number: int, model: torch.nn.Module, tokenizer, methods: list,
               kept: set | None) -> None:
    """Time every candidate of ``model`` and check the pick against the targets."""
    from nano import InferenceOptimizer
    from nano.generation.lm_search import fastest
    from nano.models.shakespeare_lm import PROMPTS, held_out_text

    size = sum(p.numel() for p in model.parameters()) / 1e9
    print(f"\n{number}. speed: Llama-style, {size:.2f} B parameters, random weights\n")
    speed = InferenceOptimizer.optimize_generation(
        model, tokenizer, PROMPTS[:2], held_out_text(), methods, new_tokens=32,
        prompt_tokens=64,
        min_agreement=0.0, max_perplexity_increase=math.inf)  # judged in part 1
    print(speed.summary())

    eager = speed.result("pytorch_fp32")
    eligible = [r for r in speed.rows if r.status == "ok" and (kept is None or r.method in kept)]
    pick = fastest(eligible, 1)  # by the search's final round where it ran
    ratio = pick.speed(1).decode_tokens_per_s / eager.speed(1).decode_tokens_per_s
    share = pick.speed(1).decode_tokens_per_s / pick.limit_tokens_per_s \
        if pick.limit_tokens_per_s else float("nan")
    first = pick.speed(1).first_token_s / eager.speed(1).first_token_s
    print(f"\npick (fastest at batch 1 among those part 1 kept): {pick.method}")
    print(f"  decode tokens/s vs eager fp32, batch 1: {ratio:.2f}x (target >= 4)")
    print(f"  share of its bandwidth limit: {share:.0%} of {pick.bandwidth / 1e9:.1f} GB/s "
          f"for {pick.bytes_per_step / 1e6:.0f} MB a step (target >= 60%)")
    print(f"  time to first token vs eager fp32: {first:.2f}x (target <= 1)")


if __name__ == "__main__":
    sys.exit(main())
