"""Move tensors between processes through shared memory, and frame messages on pipes.

A call's tensors are copied once into a reusable shared-memory block (an
``Arena``) owned by the sender; the receiver maps it once and reads the tensors
without copying (``torch.frombuffer``). Everything else (shapes,
dtypes, the nesting of the inputs) travels as a small pickle on the pipe.
"""

from __future__ import annotations

import os
import pickle
import struct
from multiprocessing import resource_tracker, shared_memory
from typing import IO, Any, Optional

import torch

_ALIGN = 64
_HEADER = struct.Struct(">Q")


class TensorRef:
    """Where a tensor sits in a shared-memory block."""

    __slots__ = ("offset", "shape", "dtype")

    def __init__(self, offset: int, shape: tuple, dtype: torch.dtype):
        self.offset, self.shape, self.dtype = offset, shape, dtype


def _replace_tensors(value: Any, found: list) -> Any:
    if isinstance(value, torch.Tensor):
        found.append(value)
        return TensorRef(-1, tuple(value.shape), value.dtype)
    if isinstance(value, dict) and type(value) is dict:
        return {k: _replace_tensors(v, found) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(_replace_tensors(v, found) for v in value)
    return value


class Arena:
    """A reusable shared-memory block owned by this process: refilled each call, grown when
    too small. Reusing it avoids mapping (and page-faulting) a fresh block per call.

    With a ``prefix``, blocks are named ``prefix`` + a number and are not registered
    with this process's resource tracker: whoever started this process removes them
    by that prefix (``unlink_blocks``) if it dies without closing its arenas.
    """

    def __init__(self, prefix: Optional[str] = None):
        self.block: Optional[shared_memory.SharedMemory] = None
        self.prefix = prefix
        self._made = 0

    def write(self, value: Any) -> tuple[Optional[str], Any]:
        """Copy ``value``'s tensors in; return (block name or None, skeleton)."""
        tensors: list = []
        skeleton = _replace_tensors(value, tensors)
        if not tensors:
            return None, skeleton
        refs: list = []
        _collect_refs(skeleton, refs)
        offset = _layout(refs, tensors)
        if self.block is None or self.block.size < offset:
            self.close()
            self.block = self._create(max(offset * 2, 1 << 16))
        _copy_in(self.block, refs, tensors)
        return self.block.name, skeleton

    def _create(self, size: int) -> shared_memory.SharedMemory:
        if self.prefix is None:
            return shared_memory.SharedMemory(create=True, size=size)
        self._made += 1
        block = shared_memory.SharedMemory(name=f"{self.prefix}{self._made}", create=True,
                                           size=size)
        _untrack(block)
        return block

    def close(self) -> None:
        if self.prefix is None:
            release(self.block, unlink=True)
        elif self.block is not None:  # untracked: unlink() would upset the resource tracker
            release(self.block, unlink=False)
            _unlink_file(self.block.name)
        self.block = None


SHM_DIR = "/dev/shm"  # where POSIX shared memory lives on Linux


def _unlink_file(name: str) -> None:
    try:
        os.unlink(os.path.join(SHM_DIR, name.lstrip("/")))
    except OSError:
        pass


def unlink_blocks(prefix: str) -> None:
    """Remove every block whose name starts with ``prefix`` (a dead process's arenas)."""
    try:
        names = [n for n in os.listdir(SHM_DIR) if n.startswith(prefix)]
    except OSError:
        return
    for name in names:
        _unlink_file(name)


class Attachments:
    """Blocks another process owns, opened once and kept while they are in use (the owner
    double-buffers, so the last few names stay open)."""

    def __init__(self, keep: int = 4):
        self.blocks: dict = {}
        self.keep = keep

    def get(self, name: Optional[str]) -> Optional[shared_memory.SharedMemory]:
        if name is None:
            return None
        if name not in self.blocks:
            self.blocks[name] = attach(name, owner=False)
            while len(self.blocks) > self.keep:  # the owner has replaced the oldest block
                release(self.blocks.pop(next(iter(self.blocks))), unlink=False)
        return self.blocks[name]

    def close(self) -> None:
        for block in self.blocks.values():
            release(block, unlink=False)
        self.blocks = {}


def _layout(refs: list, tensors: list) -> int:
    offset = 0
    for ref, t in zip(refs, tensors):
        ref.offset = offset
        offset += (t.numel() * t.element_size() + _ALIGN - 1) // _ALIGN * _ALIGN
    return offset


def _bytes_of(t: torch.Tensor):
    """A contiguous tensor's memory as a 1-D uint8 numpy array (any dtype, bf16 included)."""
    return t.view(-1).view(torch.uint8).numpy()


def _copy_in(block, refs: list, tensors: list) -> None:
    # Plain memcpy through the buffer protocol, not Tensor.copy_: torch parallelizes large
    # copies, and its OpenMP threads then spin on the cores the workers are using.
    for ref, t in zip(refs, tensors):
        nbytes = t.numel() * t.element_size()
        if nbytes:
            block.buf[ref.offset:ref.offset + nbytes] = _bytes_of(t.detach().contiguous())


def _collect_refs(value: Any, refs: list) -> None:
    if isinstance(value, TensorRef):
        refs.append(value)
    elif isinstance(value, dict):
        for v in value.values():
            _collect_refs(v, refs)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _collect_refs(v, refs)


def unpack(block: Optional[shared_memory.SharedMemory], skeleton: Any, copy: bool) -> Any:
    """Rebuild ``skeleton`` with tensors from ``block``: views (``copy=False``, valid while the
    block is open) or owned copies."""
    def build(value):
        if isinstance(value, TensorRef):
            count = 1
            for s in value.shape:
                count *= s
            if count == 0:
                return torch.empty(value.shape, dtype=value.dtype)
            if copy:  # a single-threaded memcpy, as in _copy_in
                t = torch.empty(value.shape, dtype=value.dtype)
                nbytes = t.numel() * t.element_size()
                _bytes_of(t)[:] = block.buf[value.offset:value.offset + nbytes]
                return t
            return torch.frombuffer(block.buf, dtype=value.dtype, count=count,
                                    offset=value.offset).view(value.shape)
        if isinstance(value, dict):
            return {k: build(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(build(v) for v in value)
        return value

    return build(skeleton)


def _untrack(block: shared_memory.SharedMemory) -> None:
    # Python < 3.13 registers every block a process opens with its resource tracker,
    # which unlinks it (with a warning) when that process exits.
    try:
        resource_tracker.unregister(getattr(block, "_name"), "shared_memory")
    except Exception:
        pass


def attach(name: Optional[str], owner: bool) -> Optional[shared_memory.SharedMemory]:
    """Open a block another process created; ``owner``: this process will unlink it."""
    if name is None:
        return None
    block = shared_memory.SharedMemory(name=name)
    if not owner:
        _untrack(block)
    return block


def release(block: Optional[shared_memory.SharedMemory], unlink: bool) -> None:
    """Close (and optionally unlink) a block, tolerating views still alive."""
    if block is None:
        return
    try:
        block.close()
    except BufferError:  # a view still points into it; the mapping goes with the process
        pass
    if unlink:
        try:
            block.unlink()
        except FileNotFoundError:
            pass


def send(stream: IO[bytes], message: Any) -> None:
    """Write one length-prefixed pickle."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    data = memoryview(_HEADER.pack(len(payload)) + payload)
    while data:  # an unbuffered stream may take only part of it
        written = stream.write(data)
        data = data[written if written is not None else len(data):]
    stream.flush()


def _read_exact(stream: IO[bytes], size: int) -> bytes:
    # Works on unbuffered pipes too, where one read may return less than asked.
    chunks, got = [], 0
    while got < size:
        chunk = stream.read(size - got)
        if not chunk:
            raise EOFError("pipe closed")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def receive(stream: IO[bytes]) -> Any:
    """Read one length-prefixed pickle; EOFError when the other side is gone.

    Readers that ``select`` on the pipe must pass an unbuffered stream: a
    buffered one can hold a whole second message that select never reports.
    """
    (size,) = _HEADER.unpack(_read_exact(stream, _HEADER.size))
    return pickle.loads(_read_exact(stream, size))
