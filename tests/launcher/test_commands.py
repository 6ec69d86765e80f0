"""The installed commands, run for real: eval round trip, pinned instances, bad input."""

import json
import os
import re
import subprocess
import sys

import pytest

BIN = os.path.dirname(sys.executable)


def cmd(name):
    path = os.path.join(BIN, name)
    assert os.path.exists(path), f"{name} is not installed: run scripts/setup.sh"
    return path


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kw)


def test_init_unset_round_trip_in_bash():
    script = f"""
        export LD_PRELOAD=/lib/x86_64-linux-gnu/libc.so.6 OMP_NUM_THREADS=7 KEEP=1
        before=$(env | grep -v '^_=' | sort)
        eval "$({cmd('bigdl-nano-init')} -t)"
        echo "threads=$OMP_NUM_THREADS preload=$LD_PRELOAD"
        eval "$({cmd('bigdl-nano-init')} -j -r 1)"
        echo "threads=$OMP_NUM_THREADS malloc_conf=$MALLOC_CONF"
        eval "$({cmd('bigdl-nano-unset-env')})"
        after=$(env | grep -v '^_=' | sort)
        [ "$before" = "$after" ] && echo RESTORED || diff <(echo "$before") <(echo "$after")
    """
    out = run(["bash", "-c", script])
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("threads=") and lines[0] != "threads=7"
    assert "libc.so.6:" in lines[0] or "warning" in out.stderr  # appended, never dropped
    assert lines[1].startswith("threads=1")
    assert lines[-1] == "RESTORED"


def test_init_output_can_be_sourced():
    out = run(["bash", "-c", f"source <({cmd('bigdl-nano-init')} --explain); echo $OMP_NUM_THREADS"])
    assert out.returncode == 0 and out.stdout.strip().isdigit()


def test_init_runs_a_command_under_the_environment():
    out = run([cmd("bigdl-nano-init"), "-c", "-r", "1", "--", sys.executable, "-c",
               "import os; print(os.environ['OMP_NUM_THREADS'], os.environ.get('LD_PRELOAD', ''))"],
              env={k: v for k, v in os.environ.items() if k != "LD_PRELOAD"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1"]


def test_explain_gives_reasons_and_topology():
    out = run([cmd("bigdl-nano-init"), "--explain"])
    assert "# OMP_NUM_THREADS:" in out.stdout and "physical cores" in out.stdout


REPORT = ("import os; print('REPORT', os.environ['NANO_INSTANCE_ID'], "
          "os.environ['NANO_NUM_INSTANCES'], ','.join(map(str, sorted(os.sched_getaffinity(0)))), "
          "os.environ['OMP_NUM_THREADS'])")


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 usable CPUs")
def test_run_two_pinned_instances():
    out = run([cmd("bigdl-nano-run"), "--ninstances", "2", "--", sys.executable, "-c", REPORT])
    assert out.returncode == 0, out.stderr
    reports = sorted(line.split()[1:] for line in out.stdout.splitlines() if "REPORT" in line)
    assert [r[:2] for r in reports] == [["REPORT", "0"], ["REPORT", "1"]]
    cpu_sets = [set(r[3].split(",")) for r in reports]
    assert not cpu_sets[0] & cpu_sets[1]  # disjoint cores
    for r in reports:
        assert r[2] == "2" and r[4] == str(len(r[3].split(",")))
    assert all(line.startswith(("[0] ", "[1] ")) for line in out.stdout.splitlines())


def test_run_logs_per_instance(tmp_path):
    out = run([cmd("bigdl-nano-run"), "--log-dir", str(tmp_path), "--", sys.executable, "-c",
               REPORT])
    assert out.returncode == 0 and "REPORT 0 1" in (tmp_path / "instance_0.log").read_text()


def test_run_fails_when_any_instance_fails():
    out = run([cmd("bigdl-nano-run"), "--ninstances", "2", "--allow-oversubscribe", "--", "sh",
               "-c", 'exit $((NANO_INSTANCE_ID * 3))'])
    assert out.returncode == 3
    # one line per failed instance, from the launcher's logger through the CLI's handler
    assert re.search(r"^bigdl-nano-run: instance 1 \(cpus [0-9,-]+\) exited with status 3$",
                     out.stderr, re.M), out.stderr


def test_run_takes_a_command_with_options_of_its_own_without_dashes():
    """``bigdl-nano-run sh -c '...'`` read -c as its own option before."""
    out = run([cmd("bigdl-nano-run"), "sh", "-c", "echo ran $NANO_INSTANCE_ID"])
    assert out.returncode == 0, out.stderr
    assert "ran 0" in out.stdout
    out = run([cmd("bigdl-nano-run"), "--ninstances", "1", "--", "sh", "-c", "echo -- $0 x"])
    assert out.returncode == 0 and "-- sh x" in out.stdout, out.stderr


def test_run_reports_killed_instance():
    out = run([cmd("bigdl-nano-run"), "--", "sh", "-c", "kill -9 $$"])
    assert out.returncode == 137 and "signal 9" in out.stderr


@pytest.mark.parametrize("name,args,fragment", [
    ("bigdl-nano-run", ["--ninstances", "0", "--", "true"], "at least 1"),
    ("bigdl-nano-run", ["--ninstances", "-2", "--", "true"], "at least 1"),
    ("bigdl-nano-run", ["--ninstances", "999", "--", "true"], "--allow-oversubscribe"),
    ("bigdl-nano-run", ["--cores-per-instance", "999", "--", "true"], "usable physical cores"),
    ("bigdl-nano-run", ["--ninstances", "2"], "no command given"),
    ("bigdl-nano-run", ["--bogus", "--", "true"], "unrecognized arguments"),
    ("bigdl-nano-run", ["--", "/no/such/program"], "cannot run"),
    ("bigdl-nano-run", ["--nodes-list", "x", "--", "true"], "--nodes-list"),
    ("bigdl-nano-init", ["--bogus"], "unrecognized arguments"),
    ("bigdl-nano-init", ["-r", "0"], "at least 1"),
    ("bigdl-nano-init", ["-j", "-t"], "not allowed with"),
    ("bigdl-nano-init", ["--", "/no/such/program"], "cannot run"),
    ("bigdl-nano-unset-env", ["--bogus"], "unrecognized arguments"),
])
def test_bad_input_is_one_line_exit_2(name, args, fragment):
    out = run([cmd(name)] + args)
    assert out.returncode == 2
    assert fragment in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_help_works():
    for name in ("bigdl-nano-init", "bigdl-nano-unset-env", "bigdl-nano-run"):
        out = run([cmd(name), "--help"])
        assert out.returncode == 0 and "usage:" in out.stdout


def test_run_forwards_signals_to_instances():
    import signal
    import time
    child = ("import signal, sys, time\n"
             "signal.signal(signal.SIGTERM, lambda *a: (print('got TERM', flush=True), sys.exit(5)))\n"
             "print('ready', flush=True)\n"
             "time.sleep(60)\n")
    proc = subprocess.Popen([cmd("bigdl-nano-run"), "--ninstances", "2", "--allow-oversubscribe",
                             "--", sys.executable, "-c", child],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    deadline = time.time() + 30
    while len(seen) < 2 and time.time() < deadline:
        line = proc.stdout.readline()
        if "ready" in line:
            seen.append(line)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert out.count("got TERM") == 2
    assert proc.returncode == 5


OPENVINO_COMPILE = """
import numpy as np, openvino as ov, openvino.opset13 as ops
p = ops.parameter([2, 4], np.float32)
compiled = ov.Core().compile_model(ov.Model([ops.relu(p)], [p]), "CPU")
print("ok", compiled(np.ones((2, 4), np.float32))[0].sum())
"""


@pytest.mark.slow
@pytest.mark.parametrize("allocator", ["-t", "-j"])
def test_openvino_compiles_under_the_preloaded_allocator(allocator):
    """oneTBB loads libtbbbind with RTLD_DEEPBIND; beside a preloaded allocator OpenVINO's
    compile_model then aborted ("free(): invalid pointer") until the plan set
    TBB_ENABLE_SANITIZERS."""
    out = run([cmd("bigdl-nano-init"), allocator, "--", sys.executable, "-c", OPENVINO_COMPILE])
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.split() == ["ok", "8.0"]


OPENVINO_WEIGHTS_ON_HUGE_PAGES = """
import numpy as np, openvino as ov, openvino.opset13 as ops

def huge_kib():
    with open("/proc/self/smaps_rollup") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("AnonHugePages:"))

p = ops.parameter([1, 2048], np.float32)
weight = ops.constant(np.random.default_rng(0).standard_normal((8192, 2048), np.float32))
before = huge_kib()
compiled = ov.Core().compile_model(ov.Model([ops.matmul(p, weight, False, True)], [p]), "CPU")
compiled(np.ones((1, 2048), np.float32))
print(huge_kib() - before)
"""


@pytest.mark.slow
@pytest.mark.parametrize("allocator", ["-c", "-j", "-t"])
def test_openvino_weights_get_huge_pages_where_the_allocator_can_ask(allocator):
    """A decode step streams the weights: on 4 KiB pages OpenVINO's INT4 step of the 0.43 B
    model was 17% slower. With THP madvise-only, glibc malloc and jemalloc are told to ask
    for huge pages; tcmalloc cannot be, and the 64 MiB weight then stays on small pages."""
    from nano.launcher.hugepages import HugePages

    machine = HugePages.probe()
    out = run([cmd("bigdl-nano-init"), allocator, "--", sys.executable, "-c",
               OPENVINO_WEIGHTS_ON_HUGE_PAGES])
    assert out.returncode == 0, out.stderr[-500:]
    huge_mib = int(out.stdout.split()[-1]) / 1024
    can_ask = allocator != "-t" and (allocator == "-j" or machine.glibc_can_ask)
    if machine.mode == "always" or (machine.mode == "madvise" and can_ask):
        assert huge_mib >= 16, f"{machine}: {huge_mib:.0f} MiB on huge pages"
    else:  # never, unknown, or madvise with nobody asking
        assert huge_mib < 8, f"{machine}: {huge_mib:.0f} MiB on huge pages"


RUNTIMES_UNDER_OPENMP_BINDING = """
import json, os, sys, torch
from nano.launcher.openmp_binding import openmp_place_cpus
from nano.launcher.topology import read_topology
from nano.search.isolation import Zygote
narrowed = sorted(os.sched_getaffinity(0))
places = sorted(openmp_place_cpus() or [])
budget = read_topology().thread_budget
with Zygote(None) as zygote:  # optimize()'s children start from it
    child = zygote.run(lambda _: sorted(openmp_place_cpus() or []), None, 120).result
os.sched_setaffinity(0, narrowed)  # as torch left it, for the runtimes' own widening
from nano import InferenceOptimizer
model = torch.nn.Sequential(torch.nn.Linear(8, 8)).eval()
x = torch.randn(2, 8)
ov_model = InferenceOptimizer.trace(model, accelerator="openvino", input_sample=x)
ov_threads = int(ov_model.compiled.get_property("INFERENCE_NUM_THREADS"))
widened = sorted(os.sched_getaffinity(0))
print(json.dumps([narrowed, places, widened, ov_threads, budget, child]))
"""


@pytest.mark.slow
def test_runtimes_get_every_core_under_openmp_binding():
    """GNU OpenMP binding pins the main thread to one core when torch loads; ONNX Runtime's
    and OpenVINO's threads, the topology and every child process inherited that mask (an ORT
    MLP 4x slower, OpenVINO on one thread, optimize()'s children on one core) until Nano
    read and restored OpenMP's places."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "KMP_"))}
    out = run([cmd("bigdl-nano-init"), "-c", "--", sys.executable, "-c",
               RUNTIMES_UNDER_OPENMP_BINDING], env=env)
    assert out.returncode == 0, out.stderr[-800:]
    narrowed, places, widened, ov_threads, budget, child = json.loads(
        out.stdout.strip().splitlines()[-1])
    assert len(places) == len(os.sched_getaffinity(0))  # one place per usable core here
    assert narrowed == places[:1]  # what OpenMP did when torch loaded
    assert widened == places and ov_threads == len(places)
    assert budget == len(places)  # the launcher's scheduler sees every core
    assert child == places  # the search's children, runtimes widen to every core there

    plain = run([sys.executable, "-c", RUNTIMES_UNDER_OPENMP_BINDING], env=env)
    assert plain.returncode == 0, plain.stderr[-800:]
    narrowed, places, widened, *_ = json.loads(plain.stdout.strip().splitlines()[-1])
    assert places == [] and narrowed == widened  # no binding, no places: nothing touched
