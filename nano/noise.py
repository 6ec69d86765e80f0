"""Keep third-party chatter out of what a Nano user sees.

Some dependencies log at import or on first use: torchao warns about CUDA kernels it
cannot load on a CPU machine, and torch's pytree registry logs deprecations for enums
torchao registers. Nothing in them is actionable for a Nano user. ``quiet_third_party()``
raises those loggers to ERROR only for the block it wraps: a call Nano makes, or the
whole run of Nano's own programs (the CLIs, the demo, the isolation process).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

NOISY_LOGGERS = ("torchao", "torch.utils._pytree")


@contextlib.contextmanager
def quiet_third_party(*more: str, level: int = logging.ERROR) -> Iterator[None]:
    """Within the block, the NOISY_LOGGERS (and the loggers named in ``more``) report only
    records at ``level`` and above."""
    loggers = [logging.getLogger(name) for name in NOISY_LOGGERS + more]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, old in zip(loggers, levels):
            logger.setLevel(old)


@contextlib.contextmanager
def quiet_console() -> Iterator[None]:
    """Within the block, Python-level writes to stdout and stderr are dropped: for a library
    call that draws its own progress bars (NNCF's rich bars) with no switch to turn them off."""
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def quiet_third_party_for_good() -> None:
    """The same for the rest of this process: only for processes that are Nano's own."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
