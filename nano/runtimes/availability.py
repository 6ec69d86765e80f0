"""Whether an optional runtime is installed: the reason a backend gives when it is not."""

from __future__ import annotations

import importlib
from typing import Optional

from nano.errors import NanoError
from nano.noise import quiet_third_party


class MissingDependency(NanoError, ImportError):
    """An optional runtime is not installed; the message says what to install."""


def module_available(name: str, install: str) -> Optional[str]:
    """None if ``name`` imports, else the "missing dependency" reason."""
    try:
        with quiet_third_party():  # the first import of a runtime may log its own troubles
            importlib.import_module(name)
    except ImportError:
        return f"missing dependency: {install}"
    return None
