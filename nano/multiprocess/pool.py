"""``MultiInstanceModel``: one model served by N worker processes, each pinned to its own cores.

Workers are fresh interpreters (never forks of the caller, whose OpenMP state
is not fork-safe) that load the saved artifact, so ONNX Runtime and OpenVINO
sessions are created inside each worker with its own thread count rather than
pickled. Results come back in input order; a worker that raises or dies
becomes an error naming the input, and the pool shuts down without hanging.
"""

from __future__ import annotations

import collections
import os
import secrets
import selectors
import subprocess
import sys
import tempfile
import time
from typing import IO, Optional, Sequence

import torch

from nano.errors import NanoError, NanoTypeError, NanoValueError
from nano.runtimes.data import ForwardParams, as_batches, split_batch
from nano.runtimes.structure import normalize_sample, unflatten_output
from nano.launcher.cpulist import format_cpu_list
from nano.launcher.pinning import child_setup
from nano.multiprocess import transport


class InstanceError(NanoError, RuntimeError):
    """A worker of a multi-instance model raised on an input, or died; the pool is closed.
    (Training ranks fail with ``nano.trainer.local_ranks.WorkerError`` instead.)"""


class InstanceTimeout(InstanceError, TimeoutError):
    """An input took longer than the pool's ``timeout``; its worker was killed, the pool
    is closed."""


API_OPTION_NAMES = {"noun": "processes", "instances": "num_processes",
                    "cores": "cores_per_process", "oversubscribe": "allow_oversubscribe=True"}


def cpu_sets(num_processes: int, cores_per_process: Optional[int] = None,
             cpu_for_each_process: Optional[Sequence[Sequence[int]]] = None,
             allow_oversubscribe: bool = False) -> list[list[int]]:
    """Each worker's CPUs: given explicitly, or from the launcher's scheduler."""
    from nano.launcher.schedule import SchedulingError, schedule_instances
    from nano.launcher.topology import read_topology

    if num_processes < 1:
        raise ValueError(f"num_processes must be at least 1, got {num_processes}")
    if cpu_for_each_process is not None:
        sets = [sorted(set(c)) for c in cpu_for_each_process]
        if len(sets) != num_processes:
            raise ValueError(f"cpu_for_each_process has {len(sets)} entries for "
                             f"{num_processes} processes")
        allowed = os.sched_getaffinity(0)
        for s in sets:
            if not s or not set(s) <= allowed:
                raise ValueError(f"cpu_for_each_process entry {s} is empty or names CPUs this "
                                 f"process may not use ({format_cpu_list(allowed)})")
        return sets
    try:
        return schedule_instances(read_topology(), num_processes, cores_per_process,
                                  allow_oversubscribe=allow_oversubscribe,
                                  option_names=API_OPTION_NAMES)
    except SchedulingError as e:
        raise NanoValueError(str(e)) from None


def save_for_workers(model: torch.nn.Module, directory: str) -> None:
    """Write what ``worker.load`` reads: the Nano model in ``directory/model``, plus the
    pickled module (``directory/module.pkl``) for state-dict kinds and plain torch models.
    The module stays out of the Nano directory, whose files are all checksummed."""
    import cloudpickle

    from nano.runtimes.model import AcceleratedModel

    module = None
    if isinstance(model, AcceleratedModel):
        model.save(os.path.join(directory, "model"))
        if model.needs_model_to_load:
            module = getattr(model, "module", None)
            module = getattr(module, "_orig_mod", module)
    else:
        module = model
    if module is not None:
        with open(os.path.join(directory, "module.pkl"), "wb") as f:
            cloudpickle.dump(module, f)


MAX_CHUNK = 8


def chunks(count: int, workers: int) -> list[list[int]]:
    """Input indexes grouped into requests: up to MAX_CHUNK inputs per request, so the
    per-message cost (pipe, pickle, the parent's wake-up) is paid once per chunk. Chunks
    shrink as the work runs out (a quarter of each worker's share of what is left), so no
    worker sits idle at the end while another finishes a long chunk."""
    result, start = [], 0
    while start < count:
        size = max(1, min(MAX_CHUNK, (count - start) // (4 * workers)))
        result.append(list(range(start, min(start + size, count))))
        start += size
    return result


def describe_inputs(indexes: list[int]) -> str:
    """How an error names a chunk's inputs: "input 4", or "one of inputs 0-4"."""
    if len(indexes) == 1:
        return f"input {indexes[0]}"
    return f"one of inputs {indexes[0]}-{indexes[-1]}"


class _Worker:
    def __init__(self, index: int, cpus: list, model_dir: str, block_prefix: str):
        self.index, self.cpus = index, cpus
        self.block_prefix = block_prefix  # names of the shared-memory blocks it creates
        env = dict(os.environ, OMP_NUM_THREADS=str(len(cpus)),
                   PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nano.multiprocess.instance_server", model_dir, str(len(cpus)),
             block_prefix],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, bufsize=0,
            preexec_fn=child_setup(cpus))  # unbuffered: the pool selects on stdout
        # Two requests in flight per worker, so it never idles while the parent handles a
        # reply; each in-flight request (a chunk of inputs) has its own input arena.
        self.inflight: collections.deque = collections.deque()  # lists of input indexes
        self.arenas = [transport.Arena(), transport.Arena()]
        self.sent = 0
        self.busy_since = 0.0  # when the worker started on the request at inflight[0]
        self.replies = transport.Attachments()  # this worker's output blocks

    def stdin(self) -> IO[bytes]:
        """The pipe requests go down (the worker is started with one)."""
        assert self.proc.stdin is not None
        return self.proc.stdin

    def describe(self) -> str:
        return f"worker {self.index} (cpus {format_cpu_list(self.cpus)})"

    def death(self) -> str:
        code = self.proc.wait(timeout=10)
        return f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"


class MultiInstanceModel:
    """Serve ``model`` from N pinned processes; call it with a list of inputs or a DataLoader.

    Each item is one call of the model (a batch, a tensor, a tuple of
    positional inputs or a dict of keyword inputs; DataLoader batches drop
    their labels). Returns the outputs in input order. Reusable across calls;
    ``close()`` it, or use it as a context manager.

    With ``timeout`` (seconds per input), an input that takes longer is a
    ``InstanceTimeout`` naming it; its worker is killed and the pool is closed,
    like after any worker error: make a new one to go on.
    """

    def __init__(self, model, num_processes: int, cores_per_process: Optional[int] = None,
                 cpu_for_each_process: Optional[Sequence[Sequence[int]]] = None,
                 timeout: Optional[float] = None, allow_oversubscribe: bool = False):
        self._closed = True  # until the workers are up; close() is safe from here on
        if not isinstance(model, torch.nn.Module):
            raise NanoTypeError(f"to_multi_instance takes an nn.Module or a Nano model, got "
                                f"{type(model).__name__}")
        if timeout is not None and not timeout > 0:
            raise NanoValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        self.timeout = timeout
        self.cpu_sets = cpu_sets(num_processes, cores_per_process, cpu_for_each_process,
                                 allow_oversubscribe)
        self._params = ForwardParams.of(model)
        self._dir = tempfile.TemporaryDirectory(prefix="nano-multi-")
        self._closed = False
        self.workers: list = []
        try:
            save_for_workers(model, self._dir.name)
            token = secrets.token_hex(4)
            for i, cpus in enumerate(self.cpu_sets):
                self.workers.append(_Worker(i, cpus, self._dir.name, f"nano_{token}_w{i}_"))
        except BaseException:
            self.close()
            raise
        for w in self.workers:
            try:
                ready = transport.receive(w.proc.stdout)
            except EOFError:
                self.close()
                raise InstanceError(f"{w.describe()} {w.death()} while loading the model") from None
            if not ready.get("ready"):
                self.close()
                raise InstanceError(f"{w.describe()} could not load the model: {ready['error']}")
            w.pid, w.affinity = ready["pid"], ready["cpus"]

    @property
    def num_processes(self) -> int:
        return len(self.workers)

    def _items(self, inputs) -> list:
        if isinstance(inputs, torch.utils.data.DataLoader):
            batches = as_batches(inputs, "inputs")
            return [split_batch(b, self._params, "inputs")[0] for b in batches]
        if not isinstance(inputs, (list, tuple)):
            raise TypeError("call a multi-instance model with a list of inputs or a DataLoader")
        return [normalize_sample(item) for item in inputs]

    def __call__(self, inputs) -> list:
        if self._closed:
            raise RuntimeError("this multi-instance model is closed")
        calls = self._items(inputs)
        results: list = [None] * len(calls)
        # with a timeout, one input per request, so a late reply names its input
        pending = iter(chunks(len(calls), len(self.workers)) if self.timeout is None
                       else [[i] for i in range(len(calls))])
        selector = selectors.DefaultSelector()
        for w in self.workers:
            selector.register(w.proc.stdout, selectors.EVENT_READ, w)
        try:
            started = time.monotonic()
            for w in self.workers:
                w.busy_since = started
            for _ in range(2):
                for w in self.workers:
                    self._dispatch(w, pending, calls)
            remaining = len(calls)
            while remaining:
                events = selector.select(self._wait_time())
                if self.timeout is not None:
                    self._check_deadlines()
                for key, _ in events:
                    w = key.data
                    try:
                        reply = transport.receive(w.proc.stdout)
                    except EOFError:
                        doing = (f"while running {describe_inputs(w.inflight[0])}"
                                 if w.inflight else "with nothing left to run")
                        raise InstanceError(f"{w.describe()} {w.death()} {doing}") from None
                    indexes = w.inflight[0]
                    if "error" in reply:
                        failed = indexes if reply["position"] is None else \
                            [indexes[reply["position"]]]
                        raise InstanceError(f"{describe_inputs(failed)} failed in "
                                            f"{w.describe()}: {reply['error']}\n"
                                            f"{reply['traceback']}")
                    flats = transport.unpack(w.replies.get(reply["shm"]), reply["skeleton"],
                                             copy=True)
                    for index, spec, flat in zip(indexes, reply["specs"], flats):
                        results[index] = unflatten_output(spec, flat, cast=False)
                    w.inflight.popleft()
                    w.busy_since = time.monotonic()
                    remaining -= len(indexes)
                    self._dispatch(w, pending, calls)
        except BaseException:
            self.close()
            raise
        finally:
            selector.close()
        return results

    def _wait_time(self) -> Optional[float]:
        """Seconds until the earliest deadline of a request in flight (None: no timeout)."""
        if self.timeout is None:
            return None
        busy = [w.busy_since for w in self.workers if w.inflight]
        return max(min(busy) + self.timeout - time.monotonic(), 0.0) if busy else None

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        for w in self.workers:
            if w.inflight and now - w.busy_since > self.timeout:
                w.proc.kill()
                raise InstanceTimeout(f"{describe_inputs(w.inflight[0])} took over "
                                      f"{self.timeout:g} s in {w.describe()}; the worker was "
                                      f"killed and this multi-instance model closed")

    def _dispatch(self, worker: _Worker, pending, calls) -> None:
        indexes = next(pending, None)
        if indexes is None:
            return
        worker.sent += 1
        name, skeleton = worker.arenas[worker.sent % 2].write([calls[i] for i in indexes])
        worker.inflight.append(indexes)
        try:
            transport.send(worker.stdin(), {"skeleton": skeleton, "shm": name})
        except (BrokenPipeError, OSError):
            raise InstanceError(f"{worker.describe()} {worker.death()} before "
                                f"{describe_inputs(indexes)}") from None

    def close(self) -> None:
        """Stop every worker (they exit when their pipe closes; one still busy is killed),
        free the shared memory and remove the saved model."""
        if self._closed:
            return
        self._closed = True
        for w in self.workers:
            if w.inflight:  # interrupted mid-call: do not wait for its answer
                w.proc.kill()
            try:
                w.proc.stdin.close()
            except OSError:
                pass
        for w in self.workers:
            try:
                w.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
            w.proc.stdout.close()
            w.replies.close()
            for arena in w.arenas:
                arena.close()
            transport.unlink_blocks(w.block_prefix)  # left by a worker that was killed
        self._dir.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
