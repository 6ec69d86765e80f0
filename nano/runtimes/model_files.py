"""The saved-model directory: its metadata file, checksums, and atomic replacement.

A directory holds ``nano_model.json`` (what the model is, the checksum of every file and
of the metadata itself) beside the runtime's standard files. A save is written into a
temporary sibling and swapped into place under an flock on the parent, so a reader sees
the old model or the new one, never a mix; loads verify every checksum first.
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
from typing import Callable, Iterator, Optional

from nano.errors import NanoValueError
from nano.launcher.writable import unwritable_reason
from nano.runtimes.methods import Method
from nano.runtimes.structure import InputSignature

META_FILE = "nano_model.json"
META_CHECKSUM = "meta_sha256"  # the metadata's own checksum, in META_FILE
FORMAT_VERSION = 2  # 2: input signatures describe nested structures


class ModelLoadError(NanoValueError):
    """A saved model directory is missing, partial, corrupted or needs the original module."""


def save_directory(directory: str, write: Callable[[str], dict]) -> None:
    """Replace ``directory`` (a symlink is followed) with a saved model in one step.

    ``write(staging)`` writes the runtime's files into an empty staging directory and
    returns the metadata; the file checksums, the format version and the metadata's own
    checksum are added here. An interrupted save leaves the old directory (or none) and
    no half-written one.
    """
    target = os.path.realpath(directory)
    check_save_path(target)
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.saving-", dir=parent)
    try:
        meta = {"format_version": FORMAT_VERSION, **write(staging)}
        meta["files"] = {f: _sha256(os.path.join(staging, f)) for f in _relative_files(staging)}
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


@contextlib.contextmanager
def reading(directory: str) -> Iterator[None]:
    """Hold off saves into ``directory``'s parent while it is read (a save swaps whole
    directories: a load reads between two swaps)."""
    with _locked(os.path.dirname(os.path.realpath(directory)), shared=True):
        yield


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


def restore_common(meta: dict) -> tuple[Method, Optional[InputSignature], Optional[dict],
                                        Optional[int]]:
    """The constructor arguments every backend stores in the metadata."""
    signature = meta["signature"]
    return (Method.from_json(meta["method"]),
            InputSignature.from_json(signature) if signature is not None else None,
            meta["output"], meta.get("thread_num"))
