"""Conversions shared between builds of the same model: one ONNX export for ONNX Runtime fp32
and every ONNX Runtime INT8 variant, one OpenVINO conversion for openvino_fp32/bf16/fp16
and NNCF's input.

Only a conversion that passed the fresh-values check is stored, and only for the
duration of one search (optimize()'s work directory, or one accuracy-aware
quantize()): the model, its sample and the dynamic dims are fixed there, so the
key is the kind of conversion and the dynamic dims. Files are written under a
temporary name and renamed, so a candidate killed mid-write leaves nothing a
later one would read.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import TYPE_CHECKING, Callable, Optional

if TYPE_CHECKING:
    from nano.runtimes.prepare import BuildInputs


def cache_path(inputs: BuildInputs, kind: str, suffix: str) -> Optional[str]:
    """Where ``kind`` (e.g. "onnx_fp32") is kept for these inputs, or None without a cache."""
    if not inputs.conversion_cache:
        return None
    key = hashlib.sha256(json.dumps(inputs.dynamic_dims()).encode()).hexdigest()[:16]
    return os.path.join(inputs.conversion_cache, f"{kind}-{key}{suffix}")


def publish(source: str, target: str) -> None:
    """Copy ``source`` to ``target`` atomically (a reader sees all of it or nothing)."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    partial = f"{target}.{os.getpid()}.partial"
    shutil.copyfile(source, partial)
    os.replace(partial, target)


def shared_answer(inputs: BuildInputs, kind: str, compute: Callable[[], str]) -> str:
    """``compute()``, once per search: a small answer every build of these inputs needs (the
    control-flow probe's, the embedding bounds), kept beside the conversions (atomically)."""
    path = cache_path(inputs, kind, ".txt")
    if path and os.path.exists(path):
        with open(path) as f:
            return f.read()
    answer = compute()
    if path:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        partial = f"{path}.{os.getpid()}.partial"
        with open(partial, "w") as f:
            f.write(answer)
        os.replace(partial, path)
    return answer
