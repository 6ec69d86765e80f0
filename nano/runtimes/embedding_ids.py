"""The ids each integer input may take where it feeds an embedding table.

Eager PyTorch refuses an id past an ``nn.Embedding``'s table; ONNX Runtime and OpenVINO
return another row or zeros instead. Every kind of model records these bounds when it is
built and checks its inputs against them on each call, so all runtimes refuse alike.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import torch

from nano.runtimes.conversions import shared_answer
from nano.runtimes.structure import map_tensors

if TYPE_CHECKING:
    from nano.runtimes.prepare import BuildInputs


def index_bounds(inputs: "BuildInputs") -> dict[int, int]:
    """For each flat integer input that an ``nn.Embedding``/``EmbeddingBag`` reads, the ids it
    takes (``0 <= id < bound``): eager PyTorch refuses another id, while ONNX Runtime and
    OpenVINO return another row (-1: the last) or zeros. Found once per search (kept with
    its shared conversions): it runs the model once."""
    found = shared_answer(inputs, "index_bounds",
                          lambda: json.dumps(_find_index_bounds(inputs)))
    return {int(i): n for i, n in json.loads(found).items()}


def _find_index_bounds(inputs: "BuildInputs") -> dict[int, int]:
    args, kwargs = map_tensors(torch.Tensor.clone, (inputs.args, inputs.kwargs))
    flat = inputs.signature.flatten(args, kwargs)
    storages = {i: t.untyped_storage().data_ptr() for i, t in enumerate(flat)
                if not t.is_floating_point() and t.dtype != torch.bool and t.numel()}
    bounds: dict[int, int] = {}

    def seen(module, args):
        ids = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if ids is None:
            return
        for i, pointer in storages.items():  # the input itself, or a view of it
            if ids.untyped_storage().data_ptr() == pointer:
                bounds[i] = min(bounds.get(i, module.num_embeddings), module.num_embeddings)

    hooks = [m.register_forward_pre_hook(seen) for m in inputs.model.modules()
             if isinstance(m, (torch.nn.Embedding, torch.nn.EmbeddingBag))]
    if not hooks or not storages:
        return bounds
    try:
        with torch.no_grad():
            inputs.model(*args, **kwargs)
    finally:
        for h in hooks:
            h.remove()
    return bounds
