"""Each mistake is one line, raised before anything is built (no runtime, no process)."""

import pytest
import torch

from nano import InferenceOptimizer
from nano.errors import NanoTypeError, NanoValueError
from nano.generation.build import build_lm
from tests.generation.helpers import characters


@pytest.fixture(scope="module")
def lm():
    """An untrained 1-layer Llama with a 64-position context, and a character tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=64, eos_token_id=0, pad_token_id=0)
    return LlamaForCausalLM(config).eval()


@pytest.fixture
def nothing_is_built(monkeypatch):
    """Fail the test if a candidate process would start."""
    from nano.generation import lm_search

    def refuse(*args, **kwargs):
        raise AssertionError("a candidate process was started before the mistake was found")
    monkeypatch.setattr(lm_search, "Zygote", refuse)


def one_line(error):
    assert "\n" not in str(error.value), str(error.value)
    return str(error.value)


TEXT = "Some held-out text, long enough to cut into windows. " * 40


def test_a_model_without_generate(nothing_is_built):
    with pytest.raises(NanoTypeError) as e:
        InferenceOptimizer.optimize_generation(torch.nn.Linear(4, 4), characters, ["hi"], TEXT)
    assert "generate()" in one_line(e)


def test_a_prompt_longer_than_the_context(lm, nothing_is_built):
    with pytest.raises(NanoValueError) as e:
        InferenceOptimizer.optimize_generation(lm, characters, ["x" * 50], TEXT, new_tokens=32)
    assert "longer than the model's context (64 positions)" in one_line(e)


def test_generate_past_the_context_on_a_built_model(lm):
    built = build_lm(lm, "pytorch_fp32")
    with pytest.raises(NanoValueError) as e:
        built.generate(**characters(["x" * 40]), max_new_tokens=30)
    assert "context" in one_line(e)


@pytest.mark.parametrize("method", ["torchao_int4", "pytorch_int4"])
def test_int4_on_a_runtime_without_it(lm, method, nothing_is_built):
    with pytest.raises(NanoValueError) as e:
        InferenceOptimizer.optimize_generation(lm, characters, ["hi"], TEXT, methods=[method])
    assert "openvino_int4" in one_line(e)
    with pytest.raises(NanoValueError):
        build_lm(lm, method)


def test_an_unknown_method_lists_the_choices(lm, nothing_is_built):
    with pytest.raises(NanoValueError) as e:
        InferenceOptimizer.optimize_generation(lm, characters, ["hi"], TEXT,
                                               methods=["openvino_int3"])
    assert "openvino_int4" in one_line(e)


@pytest.mark.parametrize("prompts", [[], "a single string", [1, 2]])
def test_prompts_must_be_a_list_of_text(lm, prompts, nothing_is_built):
    with pytest.raises(NanoValueError) as e:
        InferenceOptimizer.optimize_generation(lm, characters, prompts, TEXT)
    one_line(e)


def test_held_out_text_too_short(lm, nothing_is_built):
    with pytest.raises(NanoValueError) as e:
        InferenceOptimizer.optimize_generation(lm, characters, ["hi"], "too short")
    assert "held_out_text" in one_line(e)


@pytest.mark.parametrize("choice", [{"min_agreement": 1.5}, {"batches": (0,)},
                                    {"max_perplexity_increase": -1}, {"new_tokens": 0}])
def test_bad_choices(lm, choice, nothing_is_built):
    with pytest.raises(NanoValueError) as e:
        InferenceOptimizer.optimize_generation(lm, characters, ["hi"], TEXT, **choice)
    one_line(e)


def test_an_unknown_choice_names_the_known_ones(lm, nothing_is_built):
    with pytest.raises(NanoTypeError) as e:
        InferenceOptimizer.optimize_generation(lm, characters, ["hi"], TEXT, new_token=3)
    assert "new_token" in one_line(e) and "new_tokens" in str(e.value)


def test_unknown_generate_options_are_named(lm):
    with pytest.raises(NanoValueError) as e:
        build_lm(lm, "pytorch_fp32").generate(**characters(["hi"]), num_beams=4)
    assert "num_beams" in one_line(e)


def test_generate_without_input_ids(lm):
    with pytest.raises(NanoValueError) as e:
        build_lm(lm, "pytorch_fp32").generate(max_new_tokens=3)
    assert "input_ids" in one_line(e)
