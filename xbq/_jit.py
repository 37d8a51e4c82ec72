"""Numba JIT cache that cannot go stale.

numba's on-disk cache checks only the timestamp of the file that holds the jitted function,
not of the modules it calls: edit ``xbq/ring.py`` and a cached kernel in ``xbq/blkback.py``
would still run the old ring code. xbq therefore keys the cache directory by a hash of all of
its own sources, the numba version and the bounds-checking switch, so any edit starts a fresh
cache. The base directory is ``$NUMBA_CACHE_DIR`` when set (the Makefile sets it to
``.numba_cache`` in the checkout, and CI starts that empty), else ``~/.cache/xbq/numba``.

This module must be imported before any module that defines an ``@njit(cache=True)``
function; ``xbq/__init__.py`` does so.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numba
from numba.core import config

_PKG = Path(__file__).resolve().parent


def source_key() -> str:
    """Return a short hash of xbq's sources and the JIT settings that change machine code."""
    h = hashlib.sha256()
    for path in sorted(_PKG.rglob("*.py")):
        h.update(path.relative_to(_PKG).as_posix().encode())
        h.update(path.read_bytes())
    h.update(numba.__version__.encode())
    h.update(f"boundscheck={config.BOUNDSCHECK}".encode())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    """Return the cache directory used for this source tree."""
    base = os.environ.get("NUMBA_CACHE_DIR") or str(Path.home() / ".cache" / "xbq" / "numba")
    return Path(base) / source_key()


def configure() -> None:
    """Point numba's cache at :func:`cache_dir` (idempotent)."""
    config.CACHE_DIR = str(cache_dir())


configure()
