"""Whether a file or directory can be created at a path, found out before any long work."""

from __future__ import annotations

import os
import tempfile
from typing import Optional


def unwritable_reason(path: str) -> Optional[str]:
    """Why nothing can be created at ``path`` (missing directories included), or None.

    It really creates and removes a probe in the nearest existing ancestor: permission
    bits say nothing for root, nor for read-only or virtual filesystems.
    """
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(parent):
        if os.path.exists(parent):
            return f"{parent!r} is a file, not a directory"
        parent = os.path.dirname(parent)
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".nano-probe-", dir=parent))
    except OSError as e:
        return f"cannot write in {parent!r}: {e.strerror}"
    return None
