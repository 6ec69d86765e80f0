"""A Hugging Face causal LM as a stateful OpenVINO model, its weights optionally by NNCF.

The exported graph takes ``input_ids``, ``attention_mask`` and ``position_ids`` and returns
the logits of every position; the key/value cache is a state inside the compiled model
(OpenVINO's make-stateful transformation pairs each ``past.*`` input with its ``present.*``
output), so a decode step sends one token per row and reads nothing back but logits.

The cache is laid out the way OpenVINO's CPU plugin fuses into one attention node that
keeps the cache itself (``ScaledDotProductAttentionWithKVCache``): each past state passes
through a ``Gather`` by a ``beam_idx`` input (the row order, ``arange(batch)`` here) before
its ``Concat``, and each state starts from zeros sized by the batch of ``input_ids``. Without
that shape the plugin runs attention as separate MatMul, Softmax and Concat nodes, which
cost a third of a decode step of the 0.43 B model in ``benchmarks/generation.py``.

The export hands the model a 4-D additive mask it builds itself: a left-padded row's pad
positions would otherwise attend to nothing, and OpenVINO's attention returns NaN for
such a row (PyTorch returns numbers), which then reaches every later token through the
cache. Here a pad position attends to itself only; no real token ever attends to it.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch

from nano.errors import NanoValueError
from nano.generation.causal_lm import kv_shape, text_config

logger = logging.getLogger(__name__)

INPUTS = ("input_ids", "attention_mask", "position_ids")
BEAM_INPUT = "beam_idx"
WEIGHT_MODES = {"int8": "INT8_ASYM", "int4": "INT4_SYM"}  # fp32 and bf16 keep fp32 weights
# Beside compressed weights the CPU plugin quantizes each matmul's activations to int8 in
# groups, 32 wide unless told. Groups of 128 (the INT4 weights' group) decoded faster here
# (Xeon with AMX, bigdl-nano-init, medians side by side): the 1.1 B Llama's INT4 29.2 against
# 27.3 tokens/s, its INT8 26.1 against 24.9, the 0.43 B's INT4 85.6 against 79.8; 64, 256,
# 512 and 2048 were no faster, and none (float products) ran at 0.5-0.75x.
ACTIVATION_GROUP = 128


def _cache_names(layers: int) -> list[tuple[str, str]]:
    return [(f"past.{i}.{kv}", f"present.{i}.{kv}") for i in range(layers) for kv in ("key",
                                                                                       "value")]


def padding_safe_mask(attention_mask: torch.Tensor, query_length: int) -> torch.Tensor:
    """The additive (batch, 1, query, key) mask: causal, padding masked, and a query that
    would see nothing (a pad position) sees itself."""
    keys = attention_mask.shape[1]
    query_pos = torch.arange(query_length) + (keys - query_length)
    key_pos = torch.arange(keys)
    allowed = (key_pos[None, :] <= query_pos[:, None])[None, None] \
        & attention_mask[:, None, None, :].bool()
    itself = (key_pos[None, :] == query_pos[:, None])[None, None]
    allowed = allowed | (itself & ~allowed.any(-1, keepdim=True))
    return torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)


class _WithExplicitCache(torch.nn.Module):
    """The model as a function of flat tensors: ids, mask, positions, then the cache."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.layers = kv_shape(model.config)[0]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: torch.Tensor, *past: torch.Tensor) -> tuple:
        from transformers import DynamicCache

        cache = DynamicCache(config=getattr(self.model, "config"))
        layers: list[Any] = list(cache.layers[:self.layers])  # full-attention DynamicLayers
        for i, layer in enumerate(layers):
            # set, not update(): update() concatenates onto an empty tensor, which the
            # converter cannot give a rank
            layer.keys, layer.values = past[2 * i], past[2 * i + 1]
            layer.is_initialized, layer.device = True, past[2 * i].device
        mask = padding_safe_mask(attention_mask, input_ids.shape[1])
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                         past_key_values=cache, use_cache=True)
        flat = []
        for layer in list(out.past_key_values.layers[:self.layers]):
            flat += [layer.keys, layer.values]
        return (out.logits, *flat)


def export_stateful(model: torch.nn.Module) -> Any:
    """The model as a stateful ``openvino.Model`` (fp32 weights)."""
    import openvino as ov
    from openvino._offline_transformations import apply_make_stateful_transformation

    layers, kv_heads, head_dim = kv_shape(model.config)
    if len(getattr(text_config(model.config), "layer_types", None) or []) and any(
            t != "full_attention" for t in text_config(model.config).layer_types):
        raise NanoValueError("the OpenVINO export handles full attention only; this model has "
                             "sliding-window layers")
    batch, prompt, cached = 2, 4, 3
    mask = torch.ones(batch, cached + prompt, dtype=torch.long)
    mask[0, 0] = 0  # traced with padding, so the mask's path is in the graph
    example = (torch.ones(batch, prompt, dtype=torch.long), mask,
               torch.arange(cached, cached + prompt).expand(batch, prompt).contiguous(),
               *(torch.zeros(batch, kv_heads, cached, head_dim) for _ in range(2 * layers)))
    shapes = [(ov.PartialShape([-1, -1]), ov.Type.i64)] * 3 \
        + [(ov.PartialShape([-1, kv_heads, -1, head_dim]), ov.Type.f32)] * (2 * layers)
    wrapper = _WithExplicitCache(model).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on HF's Python branches
        ov_model = ov.convert_model(wrapper, example_input=example, input=shapes)
    pairs = _cache_names(layers)
    for port, name in zip(ov_model.inputs, [*INPUTS, *(p for p, _ in pairs)]):
        port.get_tensor().set_names({name})
    for port, name in zip(ov_model.outputs, ["logits", *(p for _, p in pairs)]):
        port.get_tensor().set_names({name})
    _reorder_past_by_beam(ov_model, {p for p, _ in pairs})
    apply_make_stateful_transformation(ov_model, dict(pairs))
    _start_states_empty(ov_model)
    return ov_model


def _reorder_past_by_beam(ov_model: Any, past_names: set) -> None:
    """Insert ``Gather(past, beam_idx, axis 0)`` after every past input: the shape the CPU
    plugin's stateful attention fusion matches."""
    import numpy as np
    import openvino.opset13 as ops

    beam = ops.parameter([-1], np.int32, name=BEAM_INPUT)
    beam.output(0).get_tensor().set_names({BEAM_INPUT})
    for param in ov_model.get_parameters():
        if param.output(0).get_names() & past_names:
            consumers = list(param.output(0).get_target_inputs())
            gathered = ops.gather(param.output(0), beam, ops.constant(np.int64(0)))
            for consumer in consumers:
                consumer.replace_source_output(gathered.output(0))
    ov_model.add_parameters([beam])
    ov_model.validate_nodes_and_infer_types()


def _start_states_empty(ov_model: Any) -> None:
    """Give every state an initial value, zero rows for each row of ``input_ids``, so a
    reset state needs nothing set by hand (the fused attention node requires one)."""
    import numpy as np
    import openvino.opset13 as ops

    ids = next(p for p in ov_model.get_parameters() if "input_ids" in p.output(0).get_names())
    batch = ops.gather(ops.shape_of(ids, "i64"), ops.constant(np.array([0], np.int64)),
                       ops.constant(np.int64(0)))
    for op in ov_model.get_ops():
        if op.get_type_name() == "ReadValue":
            # (batch, kv heads, 0 tokens, head dim): the sequence axis is the dynamic one
            rest = [d.get_length() if d.is_static else 0
                    for d in list(op.get_output_partial_shape(0))[1:]]
            shape = ops.concat([batch, ops.constant(np.array(rest, np.int64))], 0)
            op.set_arguments([ops.broadcast(ops.constant(np.float32(0)), shape).output(0)])
    ov_model.validate_nodes_and_infer_types()


def group_size(model: Any, preferred: int = 128) -> int:
    """The largest group (preferred, halved down to 16) that divides every matmul input
    width of ``model`` (an ``openvino.Model``): NNCF needs whole groups."""
    widths = set()
    for op in model.get_ops():
        if op.get_type_name() == "MatMul":
            shape = op.input(1).get_partial_shape()
            if shape.rank.is_static and shape[-1].is_static:
                widths.add(shape[-1].get_length())
    size = preferred
    while size > 16 and any(w % size for w in widths):
        size //= 2
    return size


def activation_group(ov_model: Any) -> int:
    """The group the CPU plugin should quantize activations in beside ``ov_model``'s
    compressed weights: its INT4 weights' group (NNCF's constants are shaped (rows, groups,
    group)) where that is smaller than ``ACTIVATION_GROUP``, else ``ACTIVATION_GROUP``."""
    import openvino as ov

    groups = [op.get_output_shape(0)[-1] for op in ov_model.get_ops()
              if op.get_type_name() == "Constant" and op.get_element_type() in (ov.Type.i4,
                                                                                ov.Type.u4)
              and op.get_output_partial_shape(0).rank == 3]
    return min([ACTIVATION_GROUP, *groups])


def compress_weights(ov_model: Any, weights: str) -> Any:
    """The model with its weights compressed by NNCF (``int8``: asymmetric per channel;
    ``int4``: symmetric in groups, embeddings and the head INT8 as NNCF keeps them)."""
    if weights not in WEIGHT_MODES:  # bf16 is a compile-time hint, not stored weights
        return ov_model
    import nncf

    from nano.noise import quiet_console, quiet_third_party

    mode = getattr(nncf.CompressWeightsMode, WEIGHT_MODES[weights])
    extra = {"group_size": group_size(ov_model), "ratio": 1.0} if weights == "int4" else {}
    with quiet_third_party("nncf"), quiet_console():  # NNCF prints a table and its bars
        return nncf.compress_weights(ov_model, mode=mode, **extra)
