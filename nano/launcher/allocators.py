"""Find the shared libraries the launcher can preload: jemalloc, tcmalloc, Intel OpenMP."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Mapping, Optional


@dataclass(frozen=True)
class Library:
    """A preloadable library: the file names to look for and how to get it."""

    name: str
    filenames: tuple
    install_hint: str


LIBRARIES = {
    "jemalloc": Library("jemalloc", ("libjemalloc.so", "libjemalloc.so.2"),
                        "apt-get install libjemalloc2 (Debian/Ubuntu), or conda install jemalloc"),
    "tcmalloc": Library("tcmalloc", ("libtcmalloc.so", "libtcmalloc.so.4", "libtcmalloc_minimal.so",
                                     "libtcmalloc_minimal.so.4"),
                        "apt-get install libtcmalloc-minimal4 (Debian/Ubuntu), or conda install "
                        "gperftools"),
    "iomp": Library("Intel OpenMP", ("libiomp5.so",), "pip install intel-openmp"),
}


def search_dirs(env: Mapping[str, str]) -> list[str]:
    """Where libraries are looked for, in order: the Python env, conda, LD_LIBRARY_PATH, system."""
    dirs = [os.path.join(sys.prefix, "lib"), os.path.join(sys.base_prefix, "lib")]
    if env.get("CONDA_PREFIX"):
        dirs.append(os.path.join(env["CONDA_PREFIX"], "lib"))
    dirs += [d for d in env.get("LD_LIBRARY_PATH", "").split(":") if d]
    dirs += ["/usr/local/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
             "/usr/lib64", "/usr/lib", "/lib/x86_64-linux-gnu", "/lib64", "/lib"]
    seen, ordered = set(), []
    for d in dirs:
        if d not in seen:
            seen.add(d)
            ordered.append(d)
    return ordered


def find_library(key: str, dirs: list[str]) -> Optional[str]:
    """Return the path of the first file of library ``key`` found in ``dirs``, else None."""
    lib = LIBRARIES[key]
    for d in dirs:
        for filename in lib.filenames:
            path = os.path.join(d, filename)
            if os.path.isfile(path):
                return path
    return None
