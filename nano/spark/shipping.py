"""A model packed on the driver and loaded once per Spark Python worker.

The packed model travels inside the column function's closure, which Spark pickles and,
when large, broadcasts to the executors itself: nothing needs a shared file system.
ONNX Runtime, OpenVINO and TorchScript saves are the runtime's files and need no Python
class; a plain ``nn.Module``, or a save that holds a state dict, also ships the module
(pickled by Spark's cloudpickle, so its class must be importable on the workers).
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from typing import Any, Optional

import torch

from nano.errors import NanoTypeError
from nano.runtimes.loading import load_model
from nano.runtimes.model import AcceleratedModel
from nano.runtimes.model_files import ModelLoadError, read_metadata


def _scratch_dir() -> Optional[str]:
    """Where a worker unpacks a model: Spark's per-application files directory, which Spark
    removes when the application ends, so a worker killed mid-load leaves nothing behind
    (None outside Spark: the system's temporary directory)."""
    try:
        from pyspark import SparkFiles

        root = SparkFiles.getRootDirectory()
    except Exception:  # no Spark context in this process
        return None
    return root if root and os.path.isdir(root) else None


def _pack(directory: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in sorted(os.listdir(directory)):
            tar.add(os.path.join(directory, name), arcname=name)
    return buffer.getvalue()


@dataclass
class ShippedModel:
    """What a worker needs to rebuild the model: a packed save, or the module itself."""

    saved: Optional[bytes]  # a Nano save directory as a tar archive
    module: Optional[torch.nn.Module]  # the plain module, or the original a save needs
    name: str

    def load(self, thread_num: int) -> torch.nn.Module:
        """Rebuild the model in this process (the save is unpacked, loaded, then removed)."""
        if self.saved is None:
            assert self.module is not None
            return self.module.eval()  # the worker's own copy
        directory = tempfile.mkdtemp(prefix="nano-spark-", dir=_scratch_dir())
        try:
            with tarfile.open(fileobj=io.BytesIO(self.saved)) as tar:
                tar.extractall(directory, filter="data")
            return load_model(directory, self.module, thread_num=thread_num)
        finally:
            shutil.rmtree(directory, ignore_errors=True)


def ship(model: Any, original: Optional[torch.nn.Module] = None
         ) -> tuple[ShippedModel, torch.nn.Module]:
    """Pack ``model`` (a Nano model, a saved directory or a plain ``nn.Module``) for the
    workers; also return it loaded here, so the driver can check it before any job runs."""
    if isinstance(model, (str, os.PathLike)):
        directory = os.fspath(model)
        if not os.path.isdir(directory):
            raise ModelLoadError(f"model {directory!r} is not a directory: pass a model saved "
                                 f"by InferenceOptimizer.save, a Nano model or an nn.Module")
        meta = read_metadata(directory)  # one line if missing or corrupted
        if meta.get("needs_model") and original is None:
            raise ModelLoadError(
                f"{directory!r} holds a state dict (method {meta.get('method_name')}): pass the "
                f"module it was built from, model_udf(path, original=MyModel()); its class must "
                f"be importable on the workers (install its package there, or "
                f"spark.sparkContext.addPyFile)")
        loaded = load_model(directory, original)  # verifies checksums; one line if it fails
        return ShippedModel(_pack(directory), original if meta.get("needs_model") else None,
                            meta.get("method_name", "saved")), loaded
    if isinstance(model, AcceleratedModel):
        with tempfile.TemporaryDirectory(prefix="nano-spark-") as tmp:
            directory = os.path.join(tmp, "model")
            model.save(directory)
            needs = read_metadata(directory).get("needs_model")
            return ShippedModel(_pack(directory), model.original if needs else None,
                                model.method.name), model
    if isinstance(model, torch.nn.Module):
        return ShippedModel(None, model, type(model).__name__), model
    raise NanoTypeError(f"model_udf takes a Nano model, a directory saved by "
                        f"InferenceOptimizer.save or an nn.Module, got {type(model).__name__}")
