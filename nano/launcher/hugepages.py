"""Transparent huge pages: whether the kernel gives them, and how a process asks for them.

Most distributions ship THP in ``madvise`` mode: memory gets 2 MiB pages only where the
process calls ``madvise(MADV_HUGEPAGE)``, which neither glibc's malloc nor the preloaded
allocators do unless told. A decode step of a language model streams hundreds of MB of
weights; on 4 KiB pages the TLB misses made OpenVINO's INT4 step of a 0.43 B Llama 17%
slower, and a sum over 1 GiB reads 24 instead of 34 GB/s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"
GLIBC_HUGETLB = "glibc.malloc.hugetlb=1"  # glibc >= 2.35: madvise what malloc mmaps
JEMALLOC_THP = "thp:always"  # jemalloc >= 5.2: madvise all its memory


def thp_mode(path: str = THP_ENABLED) -> Optional[str]:
    """The kernel's THP mode (``always``, ``madvise`` or ``never``; None where unknown)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else None


def glibc_version() -> Optional[tuple]:
    """(major, minor) of the C library this process runs on, None if it is not glibc."""
    try:
        name, version = (os.confstr("CS_GNU_LIBC_VERSION") or "").split()  # "glibc 2.36"
        return tuple(int(p) for p in version.split(".")[:2]) if name == "glibc" else None
    except (AttributeError, ValueError, OSError):
        return None


def append_tunable(existing: str, tunable: str) -> str:
    """``GLIBC_TUNABLES`` with ``tunable`` set (its earlier value for that name replaced)."""
    name = tunable.split("=")[0]
    parts = [p for p in existing.split(":") if p and p.split("=")[0] != name]
    return ":".join(parts + [tunable])


@dataclass(frozen=True)
class HugePages:
    """What the launcher needs to know: the THP mode and the C library's version."""

    mode: Optional[str]
    glibc: Optional[tuple]

    @classmethod
    def probe(cls) -> "HugePages":
        """This machine's."""
        return cls(thp_mode(), glibc_version())

    @property
    def needs_asking(self) -> bool:
        """Whether a process gets huge pages only by asking (``madvise`` mode)."""
        return self.mode == "madvise"

    @property
    def glibc_can_ask(self) -> bool:
        return self.glibc is not None and self.glibc >= (2, 35)

    def describe(self) -> str:
        """One line for ``--explain``."""
        if self.mode is None:
            return "transparent huge pages: unknown (no " + THP_ENABLED + ")"
        what = {"always": "every large mapping gets them",
                "madvise": "a process gets them only where it asks",
                "never": "off"}.get(self.mode, "")
        return f"transparent huge pages: {self.mode} ({what})"
