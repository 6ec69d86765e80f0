"""optimize() and bigdl-nano-bench leave nothing running and no temporary directory behind,
however they end: Ctrl-C, SIGTERM, SIGHUP, SIGKILL, or an exception."""

import os
import signal
import sys

import pytest
import torch

from tests.faults.helpers import (command, descendants, kill_all, nano_temp_dirs, start,
                                  wait_for, wait_gone)

pytestmark = pytest.mark.slow  # every test here builds runtimes or starts processes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _bench_env(tmp_path):
    env = dict(os.environ, FAULT_MARKER=str(tmp_path / "marker"), PYTHONPATH=ROOT)
    return env


def _wait_for_a_hanging_candidate(proc, tmp_path, seen: set) -> None:
    """Until the model has run once (the marker) and a candidate hangs in the search: the
    caller, its isolation process and the candidate it forked; ``seen`` collects them."""
    def hanging():
        seen.update(descendants(proc.pid))
        return (tmp_path / "marker").exists() and len(descendants(proc.pid)) >= 2
    wait_for(hanging, 120, "a hanging candidate")
    seen.update(descendants(proc.pid))


@pytest.mark.parametrize("sig", ["Ctrl-C", "SIGINT", "SIGTERM", "SIGHUP", "SIGKILL"])
def test_bench_stopped_while_a_candidate_hangs(tmp_path, sig):
    before = nano_temp_dirs()
    proc = start([command("bigdl-nano-bench"), "tests.faults.models_fault:hangs_in_search",
                  "--input-shape", "1,4", "--accelerator", "pytorch", "--timeout", "600"],
                 cwd=ROOT, env=_bench_env(tmp_path), own_group=True)
    seen = set()
    try:
        _wait_for_a_hanging_candidate(proc, tmp_path, seen)
        if sig == "Ctrl-C":  # the terminal signals the whole foreground job
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(getattr(signal, sig))
        out, err = proc.communicate(timeout=60)
        assert wait_gone(seen) == [], f"left running after {sig}"
        assert nano_temp_dirs() - before == set()
        if sig in ("Ctrl-C", "SIGINT"):
            assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
        elif sig != "SIGKILL":
            assert proc.returncode == -getattr(signal, sig), (proc.returncode, err[-2000:])
            assert "Traceback" not in err, err[-2000:]
    finally:
        proc.kill()
        kill_all(seen)


def _ctrl_c_during_bench_generate(tmp_path, extra: list, ready, what: str) -> None:
    """Start ``bigdl-nano-bench --generate`` on the faults' tiny LM, press Ctrl-C once
    ``ready(pid, before)`` holds, and check nothing is left running or on disk."""
    from nano.models.shakespeare_lm import held_out_text

    held_out = tmp_path / "held_out.txt"
    held_out.write_text(held_out_text())
    before = nano_temp_dirs()
    proc = start([command("bigdl-nano-bench"), "--generate", "tests.faults.models_fault:tiny_lm",
                  "--held-out", str(held_out), *extra], cwd=ROOT, env=_bench_env(tmp_path),
                 own_group=True)
    seen: set = set()
    try:
        def waiting():
            seen.update(descendants(proc.pid))
            return ready(proc.pid, before)
        wait_for(waiting, 180, what)
        seen.update(descendants(proc.pid))
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert wait_gone(seen) == [], "left running after Ctrl-C"
        assert nano_temp_dirs() - before == set()
        assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    finally:
        proc.kill()
        kill_all(seen)


def test_bench_generate_stopped_by_ctrl_c_while_a_candidate_builds(tmp_path):
    """bigdl-nano-bench --generate: Ctrl-C while candidates are built in their children."""
    def building(pid, before):  # the isolation process has forked a candidate's child
        return len(descendants(pid)) >= 2 and nano_temp_dirs() - before
    _ctrl_c_during_bench_generate(tmp_path, [], building, "a candidate being built")


def test_ctrl_c_while_onnxruntime_genai_builds_leaves_nothing(tmp_path):
    """The ONNX Runtime candidates build in a subprocess of the candidate's child, from a
    temporary copy of the model: Ctrl-C there stops both and removes the copy."""
    import psutil

    def builder_running(pid, _before):
        for child in descendants(pid):
            try:
                if "onnxruntime_genai" in " ".join(psutil.Process(child).cmdline()):
                    return True
            except psutil.Error:
                pass
        return False
    _ctrl_c_during_bench_generate(tmp_path, ["--methods", "onnxruntime_int4"],
                                  builder_running, "onnxruntime-genai's builder at work")


def test_optimize_cleans_up_when_the_caller_raises(monkeypatch):
    """An exception in the caller's process mid-search (here from the progress bar) kills the
    isolation process and removes the search's directories."""
    from nano import InferenceOptimizer
    from nano.search import candidates as search

    before, children_before = nano_temp_dirs(), descendants(os.getpid())
    real = search.run_candidate
    started = set()

    def failing(zygote, task, timeout, memory):
        started.add(zygote.proc.pid)
        if task.method.name != "original":
            raise RuntimeError("boom in the caller")
        return real(zygote, task, timeout, memory)

    monkeypatch.setattr("nano.search.run.run_candidate", failing)
    opt = InferenceOptimizer()
    with pytest.raises(RuntimeError, match="boom in the caller"):
        opt.optimize(torch.nn.Linear(4, 2), torch.randn(8, 4), accelerator="pytorch")
    assert started and wait_gone(started) == []
    assert wait_gone(descendants(os.getpid()) - children_before) == []
    assert nano_temp_dirs() - before == set()


def test_a_model_that_crashes_everywhere_gives_the_table_and_exit_1(tmp_path):
    out = start([command("bigdl-nano-bench"), "tests.faults.models_fault:crashes_in_search",
                 "--input-shape", "1,4", "--accelerator", "pytorch,jit", "--precision", "fp32",
                 "--timeout", "120"], cwd=ROOT, env=_bench_env(tmp_path))
    stdout, stderr = out.communicate(timeout=300)
    assert out.returncode == 1, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    assert "original" in stderr and "crashed" in stderr  # the table, row by row
    assert "the original model could not be run" in stderr.splitlines()[-1]


def test_optimize_on_a_model_that_crashes_everywhere_keeps_the_table(tmp_path, monkeypatch):
    from nano import InferenceOptimizer
    from nano.errors import SearchFailed
    from tests.faults.models_fault import CrashesInSearch

    monkeypatch.setenv("FAULT_MARKER", "")  # every isolated call crashes
    opt = InferenceOptimizer()
    with pytest.raises(SearchFailed, match="original model could not be run"):
        opt.optimize(CrashesInSearch(), torch.randn(8, 4), accelerator="pytorch",
                     precision="fp32")
    rows = {r["method"]: r for r in opt.records()}
    assert rows["original"]["status"] == "crashed"
    for name, r in rows.items():
        # a model without convolutions: its channels_last rows are left out, not run
        assert r["status"] in ({"crashed", "unavailable", "skipped"} if "channels_last" in name
                               else {"crashed", "unavailable"}), (name, r)


def test_bench_times_out_a_model_that_hangs_on_the_first_call(tmp_path):
    import time

    started = time.monotonic()
    proc = start([command("bigdl-nano-bench"), "tests.faults.models_fault:hangs_always",
                  "--input-shape", "1,4", "--timeout", "3"], cwd=ROOT, env=_bench_env(tmp_path))
    seen = set()
    try:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 1
        assert err.strip().splitlines()[-1] == ("bigdl-nano-bench: the model did not run on "
                                                "inputs of shape (1, 4): timeout after 3 s")
        assert time.monotonic() - started < 60
    finally:
        proc.kill()
        kill_all(seen)


def test_isolated_children_die_with_a_killed_caller(tmp_path):
    """A caller killed with SIGKILL runs no cleanup: the kernel signals its isolation process
    (PR_SET_PDEATHSIG), which kills the running candidate and removes the directories."""
    script = tmp_path / "caller.py"
    script.write_text(
        "import sys, torch\n"
        f"sys.path.insert(0, {ROOT!r})\n"
        "from nano import InferenceOptimizer\n"
        "from tests.faults.models_fault import HangsInSearch\n"
        "InferenceOptimizer().optimize(HangsInSearch(), torch.randn(8, 4), "
        "accelerator='pytorch')\n")
    before = nano_temp_dirs()
    env = dict(os.environ, FAULT_MARKER="")
    proc = start([sys.executable, str(script)], env=env)
    seen = set()
    try:
        def hanging():
            seen.update(descendants(proc.pid))
            return len(descendants(proc.pid)) >= 2 and nano_temp_dirs() - before
        wait_for(hanging, 120, "a hanging candidate")
        seen.update(descendants(proc.pid))
        proc.kill()
        proc.communicate(timeout=30)
        assert wait_gone(seen) == []
        wait_for(lambda: not (nano_temp_dirs() - before), 10, "the temporary directories to go")
    finally:
        kill_all(seen)


SCRIPT = """
import torch
from nano import InferenceOptimizer
from tests.faults.models_fault import hangs_in_search
InferenceOptimizer().optimize(hangs_in_search(), torch.randn(1, 4), accelerator="pytorch",
                              timeout_per_method=600, no_cache=True)
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_a_script_calling_optimize_ends_on_a_signal_and_leaves_no_directory(tmp_path, sig):
    """Without an outer handler (bigdl-nano-bench has one), the signal is re-delivered when
    optimize()'s block ends: the search's directories must be gone by then."""
    before = nano_temp_dirs()
    proc = start([sys.executable, "-c", SCRIPT], cwd=ROOT, env=_bench_env(tmp_path))
    seen = set()
    try:
        _wait_for_a_hanging_candidate(proc, tmp_path, seen)
        proc.send_signal(getattr(signal, sig))
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == -getattr(signal, sig), (proc.returncode, err[-2000:])
        assert wait_gone(seen) == [], f"left running after {sig}"
        assert nano_temp_dirs() - before == set()
    finally:
        proc.kill()
        kill_all(seen)
