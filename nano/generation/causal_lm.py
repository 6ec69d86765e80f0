"""What Nano needs of a causal language model, checked in one line each before long work."""

from __future__ import annotations

from typing import Any, Optional

import torch

from nano.errors import NanoTypeError, NanoValueError


def check_causal_lm(model: Any) -> None:
    """Refuse, in one line, a model Nano cannot generate with."""
    if not isinstance(model, torch.nn.Module):
        raise NanoTypeError(f"expected a causal language model (a torch.nn.Module with "
                            f"generate(), e.g. AutoModelForCausalLM), got {type(model).__name__}")
    if not callable(getattr(model, "generate", None)) or getattr(model, "config", None) is None:
        raise NanoTypeError(f"{type(model).__name__} has no generate() and config: text "
                            f"generation takes a Hugging Face causal LM (AutoModelForCausalLM "
                            f"and the like); for other models use InferenceOptimizer.optimize")
    config = text_config(model.config)
    for field in ("num_hidden_layers", "num_attention_heads", "hidden_size", "vocab_size"):
        if getattr(config, field, None) is None:
            raise NanoTypeError(f"{type(model).__name__}'s config has no {field}: Nano reads "
                                f"the KV cache's shape from a decoder config")


def text_config(config: Any) -> Any:
    """The decoder's config (multimodal configs nest it)."""
    getter = getattr(config, "get_text_config", None)
    return getter(decoder=True) if callable(getter) else config


def context_length(config: Any) -> Optional[int]:
    """How many positions the model was built for, or None if its config does not say."""
    config = text_config(config)
    for field in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, field, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_lengths(config: Any, prompt_length: int, max_new_tokens: int) -> None:
    """A prompt plus its new tokens must fit the model's context."""
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) \
            or max_new_tokens < 1:
        raise NanoValueError(f"max_new_tokens must be a whole number >= 1, got "
                             f"{max_new_tokens!r}")
    limit = context_length(config)
    if limit is not None and prompt_length + max_new_tokens > limit:
        raise NanoValueError(f"a prompt of {prompt_length} tokens plus {max_new_tokens} new ones "
                             f"is longer than the model's context ({limit} positions): shorten "
                             f"the prompt or ask for fewer tokens")


def kv_shape(config: Any) -> tuple[int, int, int]:
    """(layers, key/value heads, head size) of the model's cache."""
    config = text_config(config)
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return config.num_hidden_layers, kv_heads, head_dim


def eos_ids(model: Any) -> list[int]:
    """The token ids that end a sequence, from the generation config (else the config)."""
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if value is not None:
            return [value] if isinstance(value, int) else [int(v) for v in value]
    return []


def pad_id(model: Any) -> int:
    """The id that fills a finished row: the pad token, else the first eos, else 0."""
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        value = getattr(source, "pad_token_id", None) if source is not None else None
        if value is not None:
            return int(value)
    eos = eos_ids(model)
    return eos[0] if eos else 0
