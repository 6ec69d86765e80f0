"""Read kernel text files and parse and format CPU list strings such as ``0-3,8,10-11``."""

from __future__ import annotations

from typing import Iterable, Optional


def read_text(path: str) -> Optional[str]:
    """The stripped contents of a small kernel file, or None if it cannot be read."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def parse_cpu_list(text: str) -> list[int]:
    """Return the sorted CPU ids named by a kernel CPU list (``"0-3,8"`` -> ``[0, 1, 2, 3, 8]``)."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            stride = 1
            if ":" in hi:  # the kernel's "0-7:2" form
                hi, step = hi.split(":", 1)
                stride = int(step)
            cpus.update(range(int(lo), int(hi) + 1, stride))
        else:
            cpus.add(int(part))
    return sorted(cpus)


def format_cpu_list(cpus: Iterable[int]) -> str:
    """Format CPU ids compactly as ranges (``[0, 1, 2, 5]`` -> ``"0-2,5"``)."""
    ids = sorted(set(cpus))
    parts: list[str] = []
    start: Optional[int] = None
    prev = -2
    for cpu in ids:
        if start is None:
            start = prev = cpu
        elif cpu == prev + 1:
            prev = cpu
        else:
            parts.append(f"{start}-{prev}" if prev != start else str(start))
            start = prev = cpu
    if start is not None:
        parts.append(f"{start}-{prev}" if prev != start else str(start))
    return ",".join(parts)
