"""Turn long runtime and exporter exceptions into the one line a results table can show."""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# lines that name the actual cause, in the order we prefer them
_TELLING = ("No conversion rule found", "No ONNX function found", "is not supported",
            "not supported", "Unsupported", "unsupported")


def summarize_error(error: BaseException, limit: int = 200) -> str:
    """The most telling line of ``error``'s message, without colour codes, at most ``limit``
    characters."""
    text = _ANSI.sub("", str(error)).strip()
    lines = [line.strip(" -⬆️") for line in text.splitlines() if line.strip(" -⬆️")]
    if not lines:
        return type(error).__name__
    chosen = next((line for key in _TELLING for line in lines if key in line), lines[0])
    chosen = re.sub(r"^<class '[\w.]+'>: ", "", chosen)
    return chosen if len(chosen) <= limit else chosen[: limit - 3] + "..."
