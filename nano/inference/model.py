"""``AcceleratedModel``: the one interface every runtime's model presents.

It is called exactly like the original module and returns torch tensors in the
original output structure. It applies its own thread count (and, in the torch
backends, autocast and memory format) inside each call, so no context manager
is needed for correctness. ``save(dir)`` writes a self-describing directory:
``nano_model.json`` (method, signature, output structure, file checksums) plus
standard artifacts that deploy without Nano.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from typing import Any, ClassVar, Optional

import torch

from nano.inference.methods import Method
from nano.inference.structure import InputSignature, unflatten_output

META_FILE = "nano_model.json"
FORMAT_VERSION = 2  # 2: input signatures describe nested structures


class ModelLoadError(RuntimeError):
    """A saved model directory is missing, partial, corrupted or needs the original module."""


@contextlib.contextmanager
def torch_threads(n: Optional[int]):
    """Run the block with ``torch.set_num_threads(n)`` (and put the old count back)."""
    if not n:
        yield
        return
    old = torch.get_num_threads()
    if old != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if old != n:
            torch.set_num_threads(old)


class AcceleratedModel(torch.nn.Module):
    """Base class of every backend's model.

    Subclasses set ``accelerator`` and implement ``run(flat_inputs)`` (graph
    runtimes) or override ``forward`` (torch backends), plus ``save_artifacts``
    and the classmethod ``load_artifacts``.
    """

    accelerator: ClassVar[str] = ""
    needs_model_to_load: ClassVar[bool] = False

    def __init__(self, method: Method, signature: InputSignature, output: dict,
                 thread_num: Optional[int]):
        super().__init__()
        self.method = method
        self.signature = signature
        self.output = output  # output spec of the original model
        self.thread_num = thread_num
        self.train(False)

    # calling -------------------------------------------------------------------

    def forward(self, *args, **kwargs) -> Any:
        flat = self.signature.flatten(args, kwargs)
        outputs = self.run(flat)
        return unflatten_output(self.output, outputs)

    def run(self, inputs: list) -> list:
        """Run the runtime on flat tensor inputs, returning flat outputs."""
        raise NotImplementedError

    def train(self, mode: bool = True):
        if mode:
            raise RuntimeError(f"{type(self).__name__} is an inference model; it cannot be put "
                               f"in training mode")
        return super().train(False)

    def extra_repr(self) -> str:
        return f"method={self.method.name}, threads={self.thread_num}"

    # saving --------------------------------------------------------------------

    def save_artifacts(self, directory: str) -> dict:
        """Write the runtime's files into ``directory``; return extra metadata."""
        raise NotImplementedError

    @classmethod
    def load_artifacts(cls, directory: str, meta: dict, model: Optional[torch.nn.Module]):
        """Rebuild the model from files written by ``save_artifacts``."""
        raise NotImplementedError

    def save(self, directory: str) -> None:
        """Save to ``directory`` (created if needed) with metadata and checksums."""
        os.makedirs(directory, exist_ok=True)
        old_meta = os.path.join(directory, META_FILE)
        if os.path.exists(old_meta):
            os.remove(old_meta)  # a crash mid-save must not leave old metadata over new files
        before = set(os.listdir(directory))
        extra = self.save_artifacts(directory)
        files = sorted(set(os.listdir(directory)) - before | set(extra.pop("files", [])))
        meta = {
            "format_version": FORMAT_VERSION,
            "accelerator": self.accelerator,
            "method": self.method.to_json(),
            "method_name": self.method.name,
            "thread_num": self.thread_num,
            "signature": self.signature.to_json(),
            "output": self.output,
            "needs_model": self.needs_model_to_load,
            "files": {f: _sha256(os.path.join(directory, f)) for f in files},
            "extra": extra,
        }
        tmp = os.path.join(directory, META_FILE + ".tmp")
        with open(tmp, "w") as f:
            json.dump(meta, f, indent=2)
        os.replace(tmp, os.path.join(directory, META_FILE))


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_metadata(directory: str) -> dict:
    """Read and verify a saved model directory; raise ModelLoadError saying what is wrong."""
    path = os.path.join(directory, META_FILE)
    if not os.path.isdir(directory):
        raise ModelLoadError(f"{directory!r} is not a directory")
    if not os.path.exists(path):
        raise ModelLoadError(f"{directory!r} is not a saved Nano model: {META_FILE} is missing "
                             f"(was the save interrupted?)")
    try:
        with open(path) as f:
            meta = json.load(f)
    except ValueError as e:
        raise ModelLoadError(f"{path} is corrupted: {e}") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelLoadError(f"{path} has format version {meta.get('format_version')!r}; this "
                             f"Nano reads version {FORMAT_VERSION}")
    for name, digest in meta.get("files", {}).items():
        file = os.path.join(directory, name)
        if not os.path.exists(file):
            raise ModelLoadError(f"{directory!r} is incomplete: {name} is missing")
        if _sha256(file) != digest:
            raise ModelLoadError(f"{directory!r} is corrupted: {name} does not match its checksum")
    return meta


def load_model(directory: str, model: Optional[torch.nn.Module] = None,
               thread_num: Optional[int] = None) -> AcceleratedModel:
    """Load a directory written by ``AcceleratedModel.save``; ``thread_num`` overrides the
    saved thread count (e.g. for a worker pinned to fewer cores)."""
    from nano.inference.backends import backend_class

    meta = read_metadata(directory)
    if thread_num is not None:
        meta["thread_num"] = thread_num
    cls = backend_class(Method.from_json(meta["method"]))
    if meta.get("needs_model") and model is None:
        raise ModelLoadError(
            f"{directory!r} holds a state dict (method {meta['method_name']}): pass the original "
            f"module to rebuild it, e.g. InferenceOptimizer.load(path, model=MyModel())")
    return cls.load_artifacts(directory, meta, model)


def restore_common(meta: dict) -> tuple[Method, InputSignature, dict, Optional[int]]:
    """The constructor arguments every backend stores in the metadata."""
    return (Method.from_json(meta["method"]), InputSignature.from_json(meta["signature"]),
            meta["output"], meta.get("thread_num"))
