"""Load a saved model in a new interpreter, as a user's deployment would, and check its outputs."""

import os
import shlex
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python_command() -> list:
    """How to start a fresh interpreter like this one: under the same emulator when the
    suite runs as another CPU (scripts/test-emulated.sh sets NANO_TEST_EMULATOR; a child
    started plainly would run on the host's CPU)."""
    return [*shlex.split(os.environ.get("NANO_TEST_EMULATOR", "")), sys.executable]


def check_in_fresh_process(saved: str, args: tuple, want: torch.Tensor, scratch: str,
                           model_code: str = "None", output: str = "") -> str:
    """Load ``saved`` in a fresh process (``model_code``: the expression building the
    original module, for kinds saved as state dicts), call it on ``args`` and assert it
    returns ``want`` (``output``: an attribute of the result, e.g. ".last_hidden_state").
    Returns the loaded model's method name."""
    io_path = os.path.join(scratch, "io.pt")
    torch.save({"args": args, "want": want}, io_path)
    script = (f"import torch\nfrom nano import InferenceOptimizer\n"
              f"io = torch.load({io_path!r})\n"
              f"m = InferenceOptimizer.load({saved!r}, model={model_code})\n"
              f"print(m.method.name)\n"
              f"torch.testing.assert_close(m(*io['args']){output}, io['want'])\n")
    done = subprocess.run([*python_command(), "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()[-1]
