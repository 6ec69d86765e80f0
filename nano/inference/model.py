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
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from typing import Any, ClassVar, Iterator, Optional

import torch

from nano.errors import NanoError, NanoIndexError, NanoTypeError, NanoValueError
from nano.inference.int8_overflow import warn_on_load
from nano.inference.methods import Method
from nano.inference.structure import InputSignature, unflatten_output
from nano.launcher.capability import current
from nano.launcher.writable import unwritable_reason

META_FILE = "nano_model.json"
META_CHECKSUM = "meta_sha256"  # the metadata's own checksum, in META_FILE
FORMAT_VERSION = 2  # 2: input signatures describe nested structures


class ModelLoadError(NanoValueError):
    """A saved model directory is missing, partial, corrupted or needs the original module."""


@contextlib.contextmanager
def torch_threads(n: Optional[int]) -> Iterator[None]:
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
    artifact: ClassVar[str] = ""  # the file load_artifacts reads first (checked before loading)
    needs_model_to_load: ClassVar[bool] = False
    # kinds saved as a state dict can store their weights in bf16 (save(compression="bf16"))
    state_dict_saved: ClassVar[bool] = False

    def __init__(self, method: Method, signature: Optional[InputSignature],
                 output: Optional[dict], thread_num: Optional[int]):
        super().__init__()
        self.method = method
        self.signature = signature  # None: built without a sample (torch kinds only)
        self.output = output  # output spec of the original model (None without a sample)
        self.thread_num = thread_num
        self.output_tensors = True  # False: outputs come back as numpy arrays (BigDL's option)
        self.compression: Optional[str] = None  # set while save() writes a bf16 state dict
        # the CPU it was built for, and for integer INT8 which weights it uses
        # (nano.inference.int8_overflow): kept through save and load
        self.built_on: dict = current().to_dict()
        self.int8_scheme: Optional[str] = None
        self.traced_shapes: list = []  # see record_shapes
        self.index_bounds: dict = {}  # see record_index_bounds
        self.dynamic_dims: list = []
        object.__setattr__(self, "_nano_original", None)  # not a submodule: not saved
        self.train(False)

    # the original module -----------------------------------------------------------

    def attach_original(self, model: Optional[torch.nn.Module]) -> "AcceleratedModel":
        """Remember the user's module, so that its attributes and methods stay reachable
        here (``acc.num_classes``, ``acc.preprocess(x)``) and quantize() can start from it."""
        if model is not None and not isinstance(model, AcceleratedModel):
            object.__setattr__(self, "_nano_original", model)
        return self

    @property
    def original(self) -> Optional[torch.nn.Module]:
        """The module this model was built from (None when loaded without it)."""
        return self.__dict__.get("_nano_original")

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            original = self.__dict__.get("_nano_original")
            if original is None or name.startswith("__"):
                raise
            return getattr(original, name)

    # calling -------------------------------------------------------------------

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        signature, output = self.recorded_io()
        flat = signature.flatten(args, kwargs)
        self.check_ids(flat)
        try:
            outputs = self.run(flat)
        except Exception:
            mismatch = self.fixed_dim_mismatch(flat)
            if mismatch:  # the runtime's own words run to several lines of C++ or TorchScript
                raise NanoValueError(mismatch) from None
            raise
        return self.finish(unflatten_output(output, outputs))

    def record_shapes(self, shapes: list, dynamic_dims: list) -> "AcceleratedModel":
        """Remember the traced sample's input shapes and which dims may vary (the rest are
        fixed in the graph), to say so in one line when a call breaks that."""
        self.traced_shapes = [list(s) for s in shapes]
        self.dynamic_dims = [list(d) for d in dynamic_dims]
        return self

    def record_index_bounds(self, bounds: dict) -> "AcceleratedModel":
        """Remember which flat inputs are ids of an embedding, and how many rows it has."""
        self.index_bounds = {int(i): int(n) for i, n in bounds.items()}
        return self

    def check_ids(self, flat: list) -> None:
        """Refuse ids an embedding does not have, as eager PyTorch does (ONNX Runtime and
        OpenVINO would return another row for -1, zeros for too large an id)."""
        for i, bound in self.index_bounds.items():
            ids = flat[i] if i < len(flat) else None
            if ids is None or not ids.numel():
                continue
            low, high = int(ids.min()), int(ids.max())
            if low < 0 or high >= bound:
                name = self.signature.tensor_names[i] if self.signature else str(i)
                bad = low if low < 0 else high
                raise NanoIndexError(f"input {name!r} holds id {bad}, and the embedding it "
                                     f"feeds has rows 0 to {bound - 1}: the original model "
                                     f"raises IndexError for it too")

    def fixed_dim_mismatch(self, flat: list) -> Optional[str]:
        """Which input has another size in a dimension the traced graph fixed, or None."""
        if not self.traced_shapes or self.signature is None:
            return None
        for name, t, shape, dims in zip(self.signature.tensor_names, flat, self.traced_shapes,
                                        self.dynamic_dims):
            if t.dim() == len(shape) and any(t.shape[d] != size for d, size in enumerate(shape)
                                             if d not in dims):
                fixed = [d for d in range(len(shape)) if d not in dims]
                return (f"input {name!r} was traced with shape {tuple(shape)}, and dim(s) "
                        f"{fixed} are fixed in the {self.method.name} graph; got shape "
                        f"{tuple(t.shape)}: call it with those sizes, or trace with "
                        f"dynamic_axes={{{name!r}: [...]}} naming the dims that vary")
        return None

    def recorded_io(self) -> tuple[InputSignature, dict]:
        """The input signature and output structure recorded from the sample (a runtime
        that runs flat tensors is always built from one)."""
        if self.signature is None or self.output is None:
            raise NanoValueError(f"{self.method.name} was built without an input sample and "
                                 f"cannot flatten its inputs")
        return self.signature, self.output

    def finish(self, outputs: Any) -> Any:
        """Outputs as the caller asked for them: tensors, or numpy arrays with
        ``output_tensors=False``."""
        return outputs if self.output_tensors else _to_numpy(outputs)

    def run(self, inputs: list) -> list:
        """Run the runtime on flat tensor inputs, returning flat outputs."""
        raise NotImplementedError

    def train(self, mode: bool = True) -> "AcceleratedModel":
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
    def load_artifacts(cls, directory: str, meta: dict,
                       model: Optional[torch.nn.Module]) -> "AcceleratedModel":
        """Rebuild the model from files written by ``save_artifacts``."""
        raise NotImplementedError

    def save(self, directory: str, compression: Optional[str] = None) -> None:
        """Save to ``directory`` (created if needed) with metadata and checksums.

        ``compression="bf16"`` stores the weights of state-dict kinds (plain
        PyTorch, compile) in bf16, half the size; load() casts them back.
        """
        if compression not in (None, "fp32", "bf16"):
            raise NanoValueError(f"compression must be None, 'fp32' or 'bf16', got "
                                 f"{compression!r}")
        if compression == "bf16" and not self.state_dict_saved:
            raise NanoValueError(f"compression='bf16' applies to models saved as state dicts "
                                 f"(plain PyTorch, compile); {self.method.name} is saved as a "
                                 f"{self.accelerator} graph whose weights keep their precision")
        # a symlink is followed: the model goes where it points, and the link stays
        target = os.path.realpath(directory)
        check_save_path(target)
        parent = os.path.dirname(target)
        os.makedirs(parent, exist_ok=True)
        # Everything is written into a temporary sibling, then renamed into place: an
        # interrupted save leaves the old directory (or none) and no half-written one.
        staging = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.saving-", dir=parent)
        try:
            self.compression = compression
            try:
                extra = self.save_artifacts(staging)
            finally:
                self.compression = None
            files = _relative_files(staging)
            meta = {
                "format_version": FORMAT_VERSION,
                "accelerator": self.accelerator,
                "method": self.method.to_json(),
                "method_name": self.method.name,
                "thread_num": self.thread_num,
                "signature": self.signature.to_json() if self.signature is not None else None,
                "output": self.output,
                "output_tensors": self.output_tensors,
                "needs_model": self.needs_model_to_load,
                "files": {f: _sha256(os.path.join(staging, f)) for f in files},
                "extra": extra,
                "built_on": self.built_on,
                "int8_scheme": self.int8_scheme,
                "traced_shapes": self.traced_shapes,
                "index_bounds": self.index_bounds,
                "dynamic_dims": self.dynamic_dims,
            }
            meta[META_CHECKSUM] = metadata_digest(meta)
            with open(os.path.join(staging, META_FILE), "w") as f:
                json.dump(meta, f, indent=2)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(staging, 0o777 & ~_umask())  # mkdtemp's 0700 would hide it from others
            with _locked(parent):
                _swap_into_place(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def check_save_path(directory: str) -> None:
    """Refuse to save over a file, over a directory that is not a saved Nano model
    (replacing it would delete the user's other files), or where nothing can be written."""
    target = os.path.abspath(directory)
    if os.path.isfile(target):
        raise NanoValueError(f"cannot save to {target!r}: it is a file; give a directory path")
    if os.path.isdir(target) and os.listdir(target) \
            and not os.path.exists(os.path.join(target, META_FILE)):
        raise NanoValueError(f"cannot save to {target!r}: it is a non-empty directory that is "
                             f"not a saved Nano model; give a new or empty directory")
    reason = unwritable_reason(target)
    if reason:
        raise NanoValueError(f"cannot save to {target!r}: {reason}")


@contextlib.contextmanager
def _locked(directory: str, shared: bool = False) -> Iterator[None]:
    """Hold an flock on ``directory`` itself (no lock file to leave behind): saves into it
    take turns swapping, and loads wait for a swap under way."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # a directory this user cannot open: no one to take turns with here
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


_RENAME_EXCHANGE = 2


def _exchange(a: str, b: str) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the system
    cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_cwd = -100
    done = renameat2(at_cwd, a.encode(), at_cwd, b.encode(), _RENAME_EXCHANGE)
    if done != 0:
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOSYS):  # a file system or kernel without it
            return False
        raise OSError(err, os.strerror(err), b)
    return True


def _swap_into_place(staging: str, target: str) -> None:
    """Put ``staging`` at ``target`` in one step, removing what ``target`` held before.
    Called under ``_locked(parent)``: a concurrent save waits for its turn, and a reader
    sees the old model or the new one, never neither."""
    if not os.path.exists(target):
        os.rename(staging, target)
        return
    if _exchange(staging, target):
        shutil.rmtree(staging, ignore_errors=True)  # it holds the previous model now
        return
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.old-",
                           dir=os.path.dirname(target))
    os.rmdir(old)
    os.rename(target, old)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(old, target)  # put the previous model back
        raise
    shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _relative_files(directory: str) -> list[str]:
    """Every file under ``directory``, as sorted paths relative to it."""
    found = []
    for root, _, names in os.walk(directory):
        found += [os.path.relpath(os.path.join(root, n), directory) for n in names]
    return sorted(found)


def metadata_digest(meta: dict) -> str:
    """SHA-256 of the metadata as saved, less its own checksum: an edited method (bf16 for
    fp32, say) would otherwise load as the other kind without a word."""
    body = {k: v for k, v in meta.items() if k != META_CHECKSUM}
    # as it reads back: tuples become lists and int keys strings, which sort otherwise
    canonical = json.dumps(json.loads(json.dumps(body)), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


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
    # saves from before the metadata had a checksum have none: nothing to compare
    if META_CHECKSUM in meta and meta[META_CHECKSUM] != metadata_digest(meta):
        raise ModelLoadError(f"{path} was changed after the model was saved (it no longer "
                             f"matches its checksum): save the model again rather than edit it")
    listed = meta.get("files") or {}
    unlisted = [f for f in _relative_files(directory) if f != META_FILE and f not in listed]
    if not listed or unlisted:
        what = f"{unlisted[0]} has no checksum" if unlisted else "it records no checksums"
        raise ModelLoadError(f"{directory!r} cannot be verified: {what} in {META_FILE}; save "
                             f"the model again (e.g. InferenceOptimizer.save) into a new "
                             f"directory")
    for name, digest in listed.items():
        file = os.path.join(directory, name)
        if not os.path.exists(file):
            raise ModelLoadError(f"{directory!r} is incomplete: {name} is missing")
        if _sha256(file) != digest:
            raise ModelLoadError(f"{directory!r} is corrupted: {name} does not match its checksum")
    return meta


def save_model(model: torch.nn.Module, path: str, compression: Optional[str] = None) -> None:
    """Save a Nano model, or a plain ``nn.Module`` as an ``original`` model (its state dict),
    to directory ``path``."""
    if not isinstance(model, AcceleratedModel):
        if not isinstance(model, torch.nn.Module):
            raise NanoTypeError(f"save() takes a model returned by Nano or an nn.Module, got "
                                f"{type(model).__name__}")
        from nano.inference.backends import build_without_sample

        model = build_without_sample(Method("pytorch"), model, None)
    model.save(path, compression)


def check_thread_num(thread_num: Any) -> None:
    """A NanoValueError unless ``thread_num`` is None or a whole number >= 1 (a runtime would
    otherwise take -3 silently, or fail later in its own words)."""
    if thread_num is not None and (isinstance(thread_num, bool)
                                   or not isinstance(thread_num, int) or thread_num < 1):
        raise NanoValueError(f"thread_num must be a whole number >= 1 (or None for the usable "
                             f"cores), got {thread_num!r}")


def load_model(directory: str, model: Optional[torch.nn.Module] = None,
               thread_num: Optional[int] = None) -> AcceleratedModel:
    """Load a directory written by ``AcceleratedModel.save``; ``thread_num`` overrides the
    saved thread count (e.g. for a worker pinned to fewer cores)."""
    check_thread_num(thread_num)
    parent = os.path.dirname(os.path.realpath(directory))
    # a save into the same parent swaps whole directories: read between two swaps
    with _locked(parent, shared=True):
        return _load_unlocked(directory, model, thread_num)


def _load_unlocked(directory: str, model: Optional[torch.nn.Module],
                   thread_num: Optional[int]) -> AcceleratedModel:
    from nano.inference.backends import backend_class

    meta = read_metadata(directory)
    if thread_num is not None:
        meta["thread_num"] = thread_num
    cls = backend_class(Method.from_json(meta["method"]))
    if meta.get("needs_model") and model is None:
        raise ModelLoadError(
            f"{directory!r} holds a state dict (method {meta['method_name']}): pass the original "
            f"module to rebuild it, e.g. InferenceOptimizer.load(path, model=MyModel())")
    if model is not None and not isinstance(model, torch.nn.Module):
        raise NanoTypeError(f"model must be the original torch.nn.Module, got "
                            f"{type(model).__name__}")
    _check_artifact(directory, meta, cls)
    try:
        loaded = cls.load_artifacts(directory, meta, model)
    except (NanoError, ImportError):
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ModelLoadError(f"{directory!r}: its {cls.accelerator} files (method "
                             f"{meta['method_name']}) did not load: {type(e).__name__}: "
                             f"{first}") from e
    loaded.output_tensors = meta.get("output_tensors", True)
    loaded.built_on = meta.get("built_on") or {}
    loaded.int8_scheme = meta.get("int8_scheme")
    loaded.record_shapes(meta.get("traced_shapes") or [], meta.get("dynamic_dims") or [])
    loaded.record_index_bounds(meta.get("index_bounds") or {})
    warn_on_load(meta, directory)
    return loaded.attach_original(model)


def _check_artifact(directory: str, meta: dict, cls) -> None:
    """The metadata and the files must describe the same kind of model."""
    named = meta.get("accelerator")
    holds = ", ".join(sorted(meta["files"])) or "no files"
    if named != cls.accelerator:
        raise ModelLoadError(f"{directory!r}: {META_FILE} names accelerator {named!r} but method "
                             f"{meta['method_name']!r}, which is {cls.accelerator!r}; the "
                             f"directory holds {holds}")
    if cls.artifact and cls.artifact not in meta["files"]:
        raise ModelLoadError(f"{directory!r}: {META_FILE} names accelerator {named!r} (method "
                             f"{meta['method_name']}), which loads {cls.artifact}, but the "
                             f"directory holds {holds}")


def restore_common(meta: dict) -> tuple[Method, Optional[InputSignature], Optional[dict],
                                        Optional[int]]:
    """The constructor arguments every backend stores in the metadata."""
    signature = meta["signature"]
    return (Method.from_json(meta["method"]),
            InputSignature.from_json(signature) if signature is not None else None,
            meta["output"], meta.get("thread_num"))


def _to_numpy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().numpy()
    if isinstance(value, dict):
        return type(value)({k: _to_numpy(v) for k, v in value.items()}) \
            if type(value) is dict else {k: _to_numpy(v) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_to_numpy(v) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(_to_numpy(v) for v in value)
    return value
