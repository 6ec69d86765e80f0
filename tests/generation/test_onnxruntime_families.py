"""The ONNX Runtime candidates on each model family Nano lets onnxruntime-genai's builder
write, and a clear refusal of the others."""

import pytest
import torch

from nano import InferenceOptimizer
from nano.errors import NanoValueError
from nano.generation.build import build_lm
from nano.generation.onnxruntime_export import ARCHITECTURES
from tests.generation.helpers import characters

SMALL = dict(vocab_size=160, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
             eos_token_id=None, pad_token_id=0)


def family(architecture: str) -> torch.nn.Module:
    """An untrained two-layer model of ``architecture`` (e.g. "Qwen2ForCausalLM")."""
    import transformers

    config_class = getattr(transformers, architecture.replace("ForCausalLM", "Config"))
    extra = {"head_dim": 16} if architecture.startswith(("Gemma", "Qwen3")) else {}
    torch.manual_seed(0)
    return getattr(transformers, architecture)(config_class(**SMALL, **extra)).eval()


@pytest.mark.slow
@pytest.mark.parametrize("architecture", [a for a in ARCHITECTURES if a != "LlamaForCausalLM"])
def test_each_family_generates_the_original_tokens_in_a_padded_batch(architecture):
    """Llama: test_candidates checks it on the Shakespeare LM (real weights)."""
    model = family(architecture)
    prompts = characters(["to be", "or not to be, that is"])  # left-padded
    with torch.no_grad():
        want = model.generate(**prompts, max_new_tokens=12, do_sample=False)
    got = build_lm(model, "onnxruntime_fp32").generate(**prompts, max_new_tokens=12)
    assert torch.equal(got, want), (got, want)


def test_a_family_the_builder_does_not_write_is_one_line_before_building():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=128, n_embd=32, n_layer=1, n_head=2)).eval()
    with pytest.raises(NanoValueError, match="not GPT2LMHeadModel") as e:
        InferenceOptimizer.optimize_generation(gpt2, characters, ["hi"], "some text " * 80,
                                               methods=["onnxruntime_int4"])
    assert "\n" not in str(e.value)
    with pytest.raises(NanoValueError, match="use an openvino_\\* method"):
        build_lm(gpt2, "onnxruntime_int4")


def test_a_layer_as_wide_as_the_vocabulary_is_refused_before_building():
    """onnxruntime-genai's builder takes any Linear layer with vocab_size outputs for the LM
    head; with an MLP as wide as the vocabulary it wrote the MLP's gate as the head (logits
    off by 0.36 at fp32)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(**{**SMALL, "intermediate_size": 160})).eval()
    with pytest.raises(NanoValueError, match="vocab_size \\(160\\) outputs") as e:
        build_lm(model, "onnxruntime_fp32")
    assert "\n" not in str(e.value)
