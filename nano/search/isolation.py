"""Run tasks in child processes so a crash, hang or memory blow-up costs one task, not the caller.

A *zygote* is a fresh interpreter that imports torch, loads the shared payload
(the model and data) once, and forks one child per task. Forking from the
caller itself is not an option: GNU OpenMP hangs in a forked child once the
parent has run a parallel region; the zygote never runs one. The zygote also
spares each task the interpreter start and the payload transfer, and unlike
multiprocessing's spawn/forkserver it never re-imports the caller's
``__main__``, so scripts without an ``if __name__ == "__main__"`` guard work.

Nothing outlives the caller: the zygote runs in its own session (a terminal's
Ctrl-C reaches only the caller, which then stops it, so no second traceback), kills
a task's process group when the task ends (what the task left running goes with it),
is killed with the running task's whole process group on ``close()``, and gets
SIGTERM from the kernel when the caller dies (even by SIGKILL); it then kills the
task, removes its directory and the caller's ``janitor_dirs``, and exits. A task
gets SIGKILL when the zygote dies.

Protocol (one JSON line each way, one task at a time): the parent sends
``{"payload": path, "janitor": [dirs], "preload": [modules]}`` once, then
``{"task": path, "result": path, "log": path}`` per task (the task file holds the
function and its argument); the zygote answers ``{"pid": N}`` when the child starts
and ``{"pid": N, "status": S}`` when it ends.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, IO, Optional, Sequence

import cloudpickle

from nano.launcher.openmp_binding import unbind_main_thread
from nano.launcher.termination import die_with_parent, kill_group

logger = logging.getLogger(__name__)

SHARED: Any = None  # the payload, in the zygote and its children
_PRELOADED_BYTES = 0  # in the zygote and its children: what the preload made resident


def peak_rss_bytes() -> int:
    """This process's peak resident memory, not counting the modules a zygote preloaded for
    all its tasks (a forked child starts with its zygote's resident pages): a task that
    never needed them reads as it would without the preload."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    return max(0, peak - _PRELOADED_BYTES)


@dataclass
class Outcome:
    """How a task ended: ``ok`` with its result, or ``failed``/``crashed``/``timeout``/``memory``."""

    status: str
    result: Any = None
    detail: str = ""
    seconds: float = 0.0


def _dump(obj, path):
    """Pickle ``obj`` to ``path`` (cloudpickle: classes defined in ``__main__`` or in
    functions go by value), the bytes of its CPU tensors to ``path + STORAGES``.

    Pickled as usual, each tensor storage is first copied to a bytes object that the
    pickler keeps until the end: the caller's memory doubled (a 1.1 B Llama of 4.4 GB took
    the caller to 9.3 GB, and its generation search was killed for want of memory on 24
    GiB). Here each storage's memory is written to the side file as it is."""
    with open(path, "wb") as f, open(path + STORAGES, "wb") as side:
        _StoragePickler(f, side).dump(obj)


def _load(path):
    """What ``_dump`` wrote to ``path``."""
    with open(path, "rb") as f, open(path + STORAGES, "rb", buffering=0) as side:
        return _StorageUnpickler(f, side).load()


STORAGES = ".storages"  # beside a dumped file: its tensors' bytes


def _cpu_storage(obj: Any) -> Any:
    """``obj``'s untyped storage when it is a torch storage in CPU memory, else None."""
    torch = sys.modules.get("torch")  # no torch imported: no tensors to write
    if torch is None:
        return None
    if isinstance(obj, torch.storage.TypedStorage):
        obj = obj._untyped_storage
    if isinstance(obj, torch.UntypedStorage) and obj.device.type == "cpu":
        return obj
    return None


def _storage_bytes(untyped: Any) -> Any:
    """A uint8 numpy view of ``untyped``'s memory (no copy)."""
    import torch

    return torch.empty(0, dtype=torch.uint8).set_(untyped).numpy()


class _StoragePickler(cloudpickle.Pickler):
    """cloudpickle writing each CPU storage once to a side file, in its place an id."""

    def __init__(self, file: IO[bytes], side: IO[bytes]):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._side = side
        # storage (address, bytes) -> its id, and the storage: held until the dump ends,
        # so a temporary one's address cannot come back as another's
        self._written: dict = {}

    def persistent_id(self, obj: Any) -> Any:
        untyped = _cpu_storage(obj)
        if untyped is None:
            return None
        key = (untyped.data_ptr(), untyped.nbytes()) if untyped.nbytes() else id(untyped)
        if key not in self._written:
            self._written[key] = ((len(self._written), self._side.tell(), untyped.nbytes()),
                                  untyped)
            self._side.write(_storage_bytes(untyped).data)
        typed = not isinstance(obj, type(untyped))  # a TypedStorage, as tensors pickle theirs
        dtype = str(obj.dtype).removeprefix("torch.") if typed else None
        return ("storage", *self._written[key][0], dtype)


class _StorageUnpickler(pickle.Unpickler):
    """Reads what ``_StoragePickler`` wrote; a storage seen twice is one storage again."""

    def __init__(self, file: IO[bytes], side: io.RawIOBase):
        super().__init__(file)
        self._side = side
        self._read: dict = {}

    def persistent_load(self, pid: Any) -> Any:
        import torch

        _, number, offset, nbytes, dtype = pid
        if number not in self._read:
            untyped = torch.UntypedStorage(nbytes)
            self._side.seek(offset)
            view, done = memoryview(_storage_bytes(untyped)), 0
            while done < nbytes:  # a read returns at most 2 GiB on Linux
                got = self._side.readinto(view[done:])
                if not got:
                    raise EOFError("a dumped file's storages end inside a tensor")
                done += got
            self._read[number] = untyped
        untyped = self._read[number]
        if dtype is None:
            return untyped
        return torch.storage.TypedStorage(wrap_storage=untyped, dtype=getattr(torch, dtype),
                                          _internal=True)


def _tail(path: str, lines: int = 3) -> str:
    try:
        with open(path, errors="replace") as f:
            text = [line.strip() for line in f.read().splitlines() if line.strip()]
    except OSError:
        return ""
    return " | ".join(text[-lines:])


# How a zygote's interpreter is started. Under QEMU's user mode a child started plainly
# runs on the host's CPU, not the emulated one: a suite run as another CPU prefixes the
# emulator here (tests/conftest.py), so the candidates are built where the caller runs.
PYTHON_COMMAND = [sys.executable]


class Zygote:
    """A clean child interpreter holding the payload, forking one process per task.

    ``janitor_dirs`` are removed by the zygote if the caller dies without closing it.
    """

    def __init__(self, payload: Any, env: Optional[dict] = None,
                 janitor_dirs: Sequence[str] = (), preload: Sequence[str] = ()):
        self.dir = ""
        self.proc: Optional[subprocess.Popen] = None
        self._busy = False  # a task was sent and its end not yet read
        self._running: Optional[int] = None  # pid of that task, once the zygote said it
        self._pending = b""
        self._count = 0
        try:
            self.dir = tempfile.mkdtemp(prefix="nano-isolation-")
            payload_path = os.path.join(self.dir, "payload.pkl")
            _dump(payload, payload_path)
            child_env = dict(os.environ if env is None else env)
            child_env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
            child_env["NANO_ISOLATION_PARENT"] = str(os.getpid())
            # Unbuffered: _recv selects on the pipe and keeps its own line buffer, since a
            # buffered reader could hold a second line that select would never report.
            unbind_main_thread()  # the zygote inherits this thread's mask: all of it
            self.proc = subprocess.Popen([*PYTHON_COMMAND, "-m", "nano.search.isolation"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         env=child_env, bufsize=0, start_new_session=True)
            self._send({"payload": payload_path, "janitor": [self.dir, *janitor_dirs],
                        "preload": list(preload)})
            ready = self._recv(timeout=600)
            if not ready or "ready" not in ready:
                raise RuntimeError(f"the isolation process failed to start: {ready}")
        except BaseException:
            self.close()
            raise

    def _pipes(self) -> tuple[IO[bytes], IO[bytes]]:
        """The zygote's stdin and stdout (it is started with both)."""
        assert self.proc is not None and self.proc.stdin and self.proc.stdout
        return self.proc.stdin, self.proc.stdout

    def _send(self, msg: dict) -> None:
        stdin, _ = self._pipes()
        stdin.write((json.dumps(msg) + "\n").encode())
        stdin.flush()

    def _recv(self, timeout: float) -> Optional[dict]:
        """The next message, or None if none arrives within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            stdout = self._pipes()[1]
            ready, _, _ = select.select([stdout], [], [], max(left, 0))
            if not ready:
                return None
            chunk = os.read(stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError("the isolation process died")
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return json.loads(line)

    def run(self, func: Callable[[Any], Any], task: Any, timeout: float,
            memory_limit: Optional[int] = None) -> Outcome:
        """Run ``func(task)`` in a fresh child; never raises for what the task does."""
        import psutil

        self._count += 1
        base = os.path.join(self.dir, f"task{self._count}")
        _dump((func, task), base + ".task")
        self._busy = True
        self._send({"task": base + ".task", "result": base + ".result",
                    "log": base + ".log"})
        started = time.monotonic()
        started_msg = self._recv(timeout=60)
        if started_msg is None:
            raise RuntimeError("the isolation process did not start the task within 60 s")
        pid = self._running = started_msg["pid"]
        killed = None
        while True:
            msg = self._recv(timeout=0.2)
            if msg is not None:
                status = msg["status"]
                break
            elapsed = time.monotonic() - started
            if killed is None and elapsed > timeout:
                killed = "timeout"
            elif killed is None and memory_limit:
                try:
                    rss = psutil.Process(pid).memory_info().rss
                except psutil.Error:
                    rss = 0
                if rss > memory_limit:
                    killed = "memory"
            if killed:
                logger.info("stopping task %s (pid %d): %s", func.__name__, pid, killed)
                kill_group(pid)
        self._busy, self._running = False, None
        seconds = time.monotonic() - started
        if killed == "timeout":
            return Outcome("timeout", detail=f"timeout after {timeout:g} s", seconds=seconds)
        if killed == "memory":
            limit = (memory_limit or 0) / 2**30
            return Outcome("memory", detail=f"killed: memory above {limit:.1f} GiB",
                           seconds=seconds)
        code = os.waitstatus_to_exitcode(status)
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else ""
            tail = _tail(base + ".log")
            return Outcome("crashed", detail=f"crashed: signal {-code} {name}".strip()
                           + (f" ({tail})" if tail else ""), seconds=seconds)
        try:
            with open(base + ".result", "rb") as f:
                kind, value = pickle.load(f)
        except (OSError, EOFError, pickle.UnpicklingError):
            tail = _tail(base + ".log")
            return Outcome("crashed", detail=f"crashed: exit status {code}"
                           + (f" ({tail})" if tail else ""), seconds=seconds)
        if kind == "error":
            return Outcome("failed", detail=value, seconds=seconds)
        return Outcome("ok", result=value, seconds=seconds)

    def close(self) -> None:
        """Kill the running task (with its process group), stop the zygote, remove its files.

        The files go in any case: an interrupt while the zygote is being stopped must not
        leave its directory behind (the zygote, if still alive, dies with this process).
        """
        import shutil

        try:
            if self._running is not None:
                kill_group(self._running)
            elif self._busy and self.proc is not None:  # a task starting: the zygote kills it
                self.proc.send_signal(signal.SIGTERM)
            self._busy, self._running = False, None
            if self.proc is not None and self.proc.poll() is None:
                try:
                    self._pipes()[0].close()
                    self.proc.wait(timeout=10)
                except (OSError, subprocess.TimeoutExpired):
                    self.proc.kill()
                    self.proc.wait()
        finally:
            if self.proc is not None and self.proc.stdout is not None:
                self.proc.stdout.close()
            if self.dir:
                shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# The zygote side -----------------------------------------------------------------


def _child(msg: dict, zygote_pid: int) -> None:
    """In the forked child: run the task, write (kind, value) to the result file, exit."""
    os.setpgid(0, 0)  # so the parent can kill the child and anything it started
    import torch

    torch.set_num_threads(_THREADS)  # the zygote runs on one (see _zygote_main)
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, signal.SIG_DFL)  # not the zygote's handlers
    die_with_parent(signal.SIGKILL, zygote_pid)
    fd = os.open(msg["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    try:
        func, task = _load(msg["task"])
        value = ("ok", func(task))
    except BaseException as e:  # noqa: BLE001 - every failure becomes a row
        from nano.runtimes.error_summary import summarize_error

        value = ("error", f"{type(e).__name__}: {summarize_error(e, 400)}")
        traceback.print_exc()
    try:
        with open(msg["result"], "wb") as f:
            pickle.dump(value, f)
    except Exception as e:  # an unpicklable result
        with open(msg["result"], "wb") as f:
            pickle.dump(("error", f"result could not be sent back: {e}"), f)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


_task_pid: Optional[int] = None  # in the zygote: the task now running
_THREADS = 1  # in the zygote: the thread count a child starts with
_janitor: list = []  # in the zygote: directories to remove if the caller dies


def _caller_died(_signum, _frame) -> None:
    """In the zygote, on SIGTERM (sent by the kernel when the caller dies)."""
    import shutil

    if _task_pid is not None:
        kill_group(_task_pid, unreaped_leader=True)
    for d in _janitor:
        shutil.rmtree(d, ignore_errors=True)
    os._exit(1)


def _preload(entries: Sequence[str]) -> None:
    """Import what the tasks will (``"module:function"``: and call that), once here rather
    than in every forked child."""
    import importlib

    import psutil

    global _PRELOADED_BYTES
    zygote = psutil.Process()
    before = zygote.memory_info().rss
    for entry in entries:
        name, _, function = entry.partition(":")
        try:
            module = importlib.import_module(name)
            if function:
                getattr(module, function)()
        except Exception:  # noqa: BLE001 - the task that needs it reports the failure
            logger.debug("preloading %s failed", entry, exc_info=True)
    _PRELOADED_BYTES = max(0, zygote.memory_info().rss - before)


def _zygote_main() -> None:
    global SHARED, _task_pid
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller decides when to stop
    signal.signal(signal.SIGTERM, _caller_died)
    die_with_parent(signal.SIGTERM, int(os.environ.get("NANO_ISOLATION_PARENT", "0")) or None)
    import torch  # imported once here, inherited by every child

    from nano.noise import quiet_third_party_for_good

    # One thread until a task runs: an OpenMP team started here (unpickling a GPT-2 model
    # ran a parallel copy) would hang every forked child at its first parallel op. Each
    # child gets the default back (_child), or sets its own.
    global _THREADS
    _THREADS = torch.get_num_threads()
    torch.set_num_threads(1)

    quiet_third_party_for_good()

    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints must not corrupt the protocol
    for line in sys.stdin:
        msg = json.loads(line)
        if "payload" in msg:
            _janitor[:] = msg.get("janitor", [])
            SHARED = _load(msg["payload"])
            _preload(msg.get("preload", []))
            proto.write(json.dumps({"ready": True}) + "\n")
            continue
        pid = os.fork()
        if pid == 0:
            _child(msg, os.getppid())
        _task_pid = pid
        proto.write(json.dumps({"pid": pid}) + "\n")
        _, status = os.waitpid(pid, 0)
        _task_pid = None
        # what the task started in its group and left behind ends with it (under QEMU's
        # user mode, a task's subprocess stuck in the emulator before its exec outlived
        # the suite); the group's id stays taken while it has members, so this is safe
        kill_group(pid)
        proto.write(json.dumps({"pid": pid, "status": status}) + "\n")
    # The caller closed the pipe: nothing is left to flush or remove. A normal exit would
    # spend most of a second tearing down torch's modules while close() waits.
    os._exit(0)


if __name__ == "__main__":
    # run through the imported module so tasks see the payload as isolation.SHARED
    from nano.search import isolation

    isolation._zygote_main()
