"""bigdl-nano-run ends, and ends everything it started, when it is signalled."""

import signal
import time

import pytest

from tests.faults.helpers import command, descendants, kill_all, start, wait_for, wait_gone


def _run_with_background_child():
    proc = start([command("bigdl-nano-run"), "--ninstances", "2", "--", "sh", "-c",
                  "echo started; sleep 300 & wait"])
    seen = set()

    def started():
        seen.update(descendants(proc.pid))
        # its reaper, and two shells, each with its sleep
        return len(descendants(proc.pid)) >= 5
    wait_for(started, 30, "both instances and their background children")
    seen.update(descendants(proc.pid))
    return proc, seen


def test_sigterm_reaches_background_children_and_the_launcher_exits():
    proc, seen = _run_with_background_child()
    try:
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        out, err = proc.communicate(timeout=30)
        assert time.monotonic() - started < 10
        assert proc.returncode == 128 + signal.SIGTERM
        assert wait_gone(seen) == []
        assert out.count("started") == 2
    finally:
        proc.kill()
        kill_all(seen)


@pytest.mark.slow
def test_a_second_signal_kills_instances_that_ignore_the_first():
    proc = start([command("bigdl-nano-run"), "--ninstances", "2", "--", "sh", "-c",
                  "trap '' TERM; sleep 300 & wait"])
    seen = set()
    try:
        def started():
            seen.update(descendants(proc.pid))
            return len(descendants(proc.pid)) >= 5  # the reaper too
        wait_for(started, 30, "both instances")
        proc.send_signal(signal.SIGTERM)
        time.sleep(1)
        assert proc.poll() is None  # they ignore SIGTERM, so the launcher still waits
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        assert wait_gone(seen) == []
    finally:
        proc.kill()
        kill_all(seen)


def test_instance_exiting_with_a_background_child_does_not_hang_the_launcher():
    started = time.monotonic()
    proc = start([command("bigdl-nano-run"), "--ninstances", "2", "--", "sh", "-c",
                  "sleep 300 & echo done"])
    seen = set()
    try:
        wait_for(lambda: seen.update(descendants(proc.pid)) or proc.poll() is not None, 30,
                 "the launcher to exit")
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0 and out.count("done") == 2
        assert time.monotonic() - started < 15
        assert wait_gone(seen) == []
    finally:
        try:
            proc.kill()
        except ProcessLookupError:
            pass
        kill_all(seen)


@pytest.mark.slow
@pytest.mark.parametrize("script", ["echo started; sleep 300 & wait",
                                    "trap '' TERM; echo started; sleep 300 & wait"],
                         ids=["background-child", "ignores-sigterm"])
def test_sigkill_of_the_launcher_leaves_nothing_running(script):
    """SIGKILL runs no cleanup and the parent-death signal reached only the instances: their
    children (and an instance ignoring SIGTERM) outlived the launcher. Its reaper ends them."""
    proc = start([command("bigdl-nano-run"), "--ninstances", "2", "--", "sh", "-c", script])
    seen = set()
    try:
        def started():
            seen.update(descendants(proc.pid))
            return len(descendants(proc.pid)) >= 5  # the reaper, two shells, two sleeps
        wait_for(started, 30, "both instances and their background children")
        seen.update(descendants(proc.pid))
        proc.kill()
        proc.communicate(timeout=30)
        assert wait_gone(seen, 15) == []
    finally:
        kill_all(seen)
