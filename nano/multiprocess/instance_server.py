"""One inference instance: load the model, then serve calls from the parent until stdin closes.

Run as ``python -m nano.multiprocess.instance_server MODEL_DIR THREADS BLOCK_PREFIX`` with its
affinity mask already set by the parent; its reply blocks are named BLOCK_PREFIX + n,
so the parent can remove them if this process is killed. Messages are length-prefixed pickles on
stdin/stdout; tensors travel in shared memory (see ``transport``).
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import traceback
from typing import Any, Callable, IO, TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def load(model_dir: str, threads: int) -> torch.nn.Module:
    """The model saved by the pool (``save_for_workers``): a Nano model directory with,
    for state-dict kinds, the pickled module beside it; or just a pickled torch module."""
    import torch

    torch.set_num_threads(threads)
    module_file = os.path.join(model_dir, "module.pkl")
    module = None
    if os.path.exists(module_file):
        with open(module_file, "rb") as f:
            module = pickle.load(f)
    if os.path.isdir(os.path.join(model_dir, "model")):
        from nano.runtimes.loading import load_model

        return load_model(os.path.join(model_dir, "model"), module, thread_num=threads)
    if module is None:
        raise FileNotFoundError(f"{model_dir} holds neither a Nano model nor module.pkl")
    return module.eval()


def handle(model: Callable[..., Any], request: dict, inputs: Any, outputs: Any) -> dict:
    """Run one request (a chunk of calls); its tensors are views into the parent's block,
    gone on return. A call that raises ends the chunk with an error naming its position.

    ``outputs`` is the arena for this reply; the parent may still be reading the
    previous reply, which is why the caller alternates two arenas.
    """
    import torch

    from nano.runtimes.structure import flatten_output, output_spec
    from nano.multiprocess import transport

    calls = transport.unpack(inputs.get(request["shm"]), request["skeleton"], copy=False)
    flats, specs = [], []
    with torch.no_grad():
        for position, (args, kwargs) in enumerate(calls):
            try:
                out = model(*args, **kwargs)
            except Exception as e:
                return {"position": position, "error": f"{type(e).__name__}: {e}",
                        "traceback": traceback.format_exc()}
            flats.append(flatten_output(out))
            specs.append(output_spec(out))
    name, skeleton = outputs.write(flats)
    return {"specs": specs, "skeleton": skeleton, "shm": name}


def serve(model: Callable[..., Any], stdin: IO[bytes], stdout: IO[bytes],
          block_prefix: str) -> None:
    """Answer requests until the parent closes the pipe."""
    from nano.multiprocess import transport

    inputs = transport.Attachments()
    outputs = [transport.Arena(f"{block_prefix}{i}_") for i in range(2)]
    count = 0
    try:
        while True:
            try:
                request = transport.receive(stdin)
            except EOFError:
                return
            count += 1
            try:
                reply = handle(model, request, inputs, outputs[count % 2])
            except Exception as e:  # outside any one call (e.g. shared memory): whole chunk
                reply = {"position": None, "error": f"{type(e).__name__}: {e}",
                         "traceback": traceback.format_exc()}
            transport.send(stdout, reply)
    finally:
        inputs.close()
        for arena in outputs:
            arena.close()


def main() -> int:
    from nano.multiprocess import transport

    model_dir, threads, block_prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    # SIGTERM (the parent died, or closes the pool) unwinds, so serve() frees its blocks
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    stdin, stdout = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # prints from the model must not corrupt the protocol
    try:
        model = load(model_dir, threads)
    except Exception as e:
        transport.send(stdout, {"ready": False, "error": f"{type(e).__name__}: {e}"})
        return 1
    transport.send(stdout, {"ready": True, "pid": os.getpid(),
                            "cpus": sorted(os.sched_getaffinity(0))})
    serve(model, stdin, stdout, block_prefix)
    return 0


if __name__ == "__main__":
    sys.exit(main())
