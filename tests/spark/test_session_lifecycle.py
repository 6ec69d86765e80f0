"""Nano's own local session in a fresh process: its shape, and nothing left once it stops."""

import os
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid

import psutil
import pytest

SCRIPT = textwrap.dedent("""
    import sys, torch, nano.spark as ns
    from nano.launcher.topology import read_topology
    spark = ns.spark_session(**{"spark.local.dir": sys.argv[1]})
    cores = len(read_topology().usable_cores())
    assert spark.sparkContext.master == f"local[{cores},4]", spark.sparkContext.master
    model = torch.nn.Linear(4, 2).eval()
    df = spark.createDataFrame([(i, [0.0] * 4) for i in range(100)], "id long, x array<float>")
    print(ns.predict(df.repartition(2), model, ["x"], input_shapes=[[4]]).count())
    spark.stop()
""")


def _marked(marker: str) -> list:
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("NANO_SPARK_TEST") == marker:
                found.append(p)
        except (psutil.Error, OSError):
            continue
    return found


@pytest.mark.slow
def test_a_local_session_leaves_no_process_or_temporary_directory(tmp_path):
    marker = uuid.uuid4().hex
    local_dir = tmp_path / "spark-local"
    local_dir.mkdir()
    temp = tempfile.gettempdir()
    before = {n for n in os.listdir(temp) if n.startswith("nano-spark-")}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(local_dir)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "NANO_SPARK_TEST": marker})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "100"
    deadline = time.monotonic() + 20
    while _marked(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = _marked(marker)
    assert not left, [p.cmdline()[:3] for p in left]  # JVM, Python daemon and workers all gone
    assert list(local_dir.iterdir()) == []  # Spark's block manager and scratch dirs
    assert {n for n in os.listdir(temp) if n.startswith("nano-spark-")} <= before
