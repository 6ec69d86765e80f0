"""A Hugging Face causal LM as an ONNX model for ONNX Runtime, written by onnxruntime-genai's
model builder.

The builder writes the graph ONNX Runtime runs fastest: one ``GroupQueryAttention`` node
per layer (rotary embedding and cache inside), merged projections, and weight-only
``MatMulNBits`` at INT4 or INT8. A general ``torch.onnx`` export of the same 0.43 B Llama
ran the same INT4 matmuls a third slower (15 against 11 ms a decode step), its time spent
in some 2,800 small shape and attention nodes around them.

The builder reads a model directory (``save_pretrained``) and wants a tokenizer beside it
for files Nano does not use (onnxruntime-genai's own configuration); Nano gives it a
placeholder, and the saved Nano model keeps only the ONNX graph and its weights.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from typing import Any, Optional

import torch

from nano.errors import NanoValueError
from nano.generation.causal_lm import text_config

BUILDER = "onnxruntime_genai.models.builder"
PRECISIONS = ("fp32", "int8", "int4")  # the builder's names for them too
# the builder's weight-only quantization groups (MatMulNBits pads a last partial group)
BLOCK_SIZE = 128
# MatMulNBits' compute: 4 quantizes activations to int8 per block and multiplies in int8.
# The Shakespeare LM's INT8 and INT4 agreed the same with it as with float products (1),
# here and as a Haswell (AVX2, no int8 dot product) under QEMU: 0.996 and 0.965 over 32
# tokens of 8 prompts; the 0.43 B Llama's INT4 decode step took 11 ms with it.
ACCURACY_LEVEL = 4
# the MLP's gate and up projections as one matmul (then Split): one larger read, which
# MatMulNBits streams faster: 3% more decode tokens/s on the 0.43 B Llama at INT4
FUSIONS = ("fuse_mlp_gate_up=true",)
# INT4 only (the builder quantizes a Gather to 4 bits only): the input embedding too, as a
# GatherBlockQuantized; kept in fp32 it was 131 MB of the 0.43 B Llama's 343. A step reads
# one row of it, so decode is no faster; the Shakespeare LM agreed 0.961 with it (0.945
# without) with perplexity within 0.2% either way.
INT4_EXTRA = ("op_types_to_quantize=MatMul/Gather",)
# families the builder writes and Nano checked here against the original's logits
# (tests/generation/test_onnxruntime_families.py); the builder knows more
ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM",
                 "Qwen3ForCausalLM", "GemmaForCausalLM")


def architecture_problem(model: Any) -> Optional[str]:
    """Why the builder, as Nano uses it, cannot write ``model``; None when it can."""
    name = type(model).__name__
    if name not in ARCHITECTURES:
        return (f"onnxruntime-genai's builder, as Nano uses it, writes "
                f"{', '.join(ARCHITECTURES)}; not {name}")
    vocab = text_config(model.config).vocab_size
    heads = [m for m in model.modules()
             if isinstance(m, torch.nn.Linear) and m.out_features == vocab]
    if len(heads) > 1:  # the builder takes each such layer for the head, the last one wins
        return (f"{len(heads)} of its Linear layers have vocab_size ({vocab}) outputs, and "
                f"onnxruntime-genai's builder would take each of them for the LM head")
    layer_types = getattr(text_config(model.config), "layer_types", None) or []
    if any(t != "full_attention" for t in layer_types):
        return "Nano's ONNX Runtime decoding handles full attention only; this model has " \
               "sliding-window layers"
    return None


def _placeholder_tokenizer(directory: str) -> None:
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    # an eos token too: the builder's own configuration needs one when the model has none
    vocabulary = models.WordLevel({"<unk>": 0, "</s>": 1}, unk_token="<unk>")
    PreTrainedTokenizerFast(tokenizer_object=Tokenizer(vocabulary), unk_token="<unk>",
                            eos_token="</s>").save_pretrained(directory)


def build_onnx(model: Any, weights: str, directory: str) -> None:
    """Write ``model.onnx`` (and its external weights) for ``model`` into ``directory``."""
    if weights not in PRECISIONS:
        raise NanoValueError(f"ONNX Runtime generation takes weights {sorted(PRECISIONS)}, "
                             f"got {weights!r}")
    with tempfile.TemporaryDirectory(prefix="nano-onnx-source-") as work:
        source = os.path.join(work, "model")
        model.save_pretrained(source)
        _placeholder_tokenizer(source)
        command = [sys.executable, "-m", BUILDER, "-i", source, "-o", directory,
                   "-p", weights, "-e", "cpu", "-c", os.path.join(work, "cache"),
                   "--extra_options", f"block_size={BLOCK_SIZE}",
                   f"accuracy_level={ACCURACY_LEVEL}", *FUSIONS,
                   *(INT4_EXTRA if weights == "int4" else ())]
        done = subprocess.run(command, capture_output=True, text=True, cwd=work)
    if done.returncode or not os.path.exists(os.path.join(directory, "model.onnx")):
        lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        errors = [line for line in lines if re.match(r"\w+(Error|Exception)\b", line)]
        raise RuntimeError(f"onnxruntime-genai's builder failed (exit {done.returncode}): "
                           f"{(errors or lines or ['no output'])[-1]}")
