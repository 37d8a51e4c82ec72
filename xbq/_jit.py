"""A numba JIT cache that cannot go stale, and survives edits to unrelated modules.

numba's on-disk cache checks only the timestamp of the file that holds a jitted function,
not of the modules it calls: edit ``xbq/ring.py`` and a cached kernel in ``xbq/blkback.py``
would still run the old ring code. xbq therefore registers its own cache locator for its
package: the "source stamp" of a file is a hash of that file and of every ``xbq`` module it
imports, transitively, plus the bounds-checking switch. Editing ``ring.py`` invalidates every
kernel that depends on it and nothing else. The directory is ``$NUMBA_CACHE_DIR`` when set
(the Makefile sets it to ``.numba_cache`` in the checkout, and CI starts that empty), else
``~/.cache/xbq/numba``.

It also defines :func:`kernel`, the decorator of every hot-path function (protocol core,
engines): ``njit`` with caching, ``nogil`` and numba's reference counting switched off.

This module must be imported before any module that defines an ``@njit(cache=True)``
function; ``xbq/__init__.py`` does so.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
from pathlib import Path

from numba import njit
from numba.core import caching, config

_PKG = Path(__file__).resolve().parent


def _module_file(name: str) -> Path | None:
    """The file of an ``xbq`` module name, or None if it is not one of ours."""
    parts = name.split(".")
    if parts[0] != "xbq":
        return None
    base = _PKG.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def _imports(path: Path) -> frozenset[Path]:
    """Files of the ``xbq`` modules that ``path`` imports directly."""
    found = set()
    for node in ast.walk(ast.parse(path.read_bytes())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(f for f in map(_module_file, names) if f is not None)
    return frozenset(found)


@functools.cache
def source_stamp(path: Path) -> str:
    """Hash of ``path``, every ``xbq`` module it imports (transitively) and the JIT switches."""
    todo, seen = [path], set()
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.add(p)
            todo.extend(_imports(p))
    h = hashlib.sha256(f"boundscheck={config.BOUNDSCHECK}".encode())
    for p in sorted(seen):
        h.update(p.relative_to(_PKG).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


class _XbqCacheLocator(caching.UserProvidedCacheLocator):
    """Cache files of xbq's kernels under the cache dir, stamped by :func:`source_stamp`."""

    def get_source_stamp(self):
        return source_stamp(Path(self._py_file).resolve())

    @classmethod
    def from_function(cls, py_func, py_file):
        try:
            Path(py_file).resolve().relative_to(_PKG)
        except ValueError:
            return None
        return super().from_function(py_func, py_file)


def cache_dir() -> Path:
    """Return the base cache directory (bounds checking gets its own subdirectory)."""
    base = os.environ.get("NUMBA_CACHE_DIR") or str(Path.home() / ".cache" / "xbq" / "numba")
    return Path(base) / f"boundscheck{int(bool(config.BOUNDSCHECK))}"


def configure() -> None:
    """Point numba's cache at :func:`cache_dir` and install the locator (idempotent)."""
    config.CACHE_DIR = str(cache_dir())
    classes = caching.CacheImpl._locator_classes
    if _XbqCacheLocator not in classes:
        classes.insert(0, _XbqCacheLocator)


configure()


def kernel(fn=None, **options):
    """``numba.njit(cache=True, nogil=True)`` without numba's reference counting (NRT).

    The protocol core and the engines keep their state in namedtuples of NumPy arrays (a
    driver holds some 30). numba passes such a tuple to every call and increments and
    decrements the reference count of each array in it on entry and exit: an atomic
    read-modify-write apiece, some 60 per call, several calls per request -- and, when
    threads share the state, a cache line bounced between CPUs on every one, a contention the
    kernel does not have. A function under ``@kernel`` only *borrows* arrays: it never
    allocates one and never returns one (``tests/test_jit.py`` checks both), so nothing in
    it needs counting, and numba compiles it with NRT disabled (its ``_nrt`` option). The
    arrays live as long as the Python objects that own them.

    Use as ``@kernel`` or ``@kernel(inline="always")``; ``options`` go to ``numba.njit``.
    """
    options = {"cache": True, "nogil": True, "_nrt": False, **options}
    if fn is None:
        return lambda f: njit(**options)(f)
    return njit(**options)(fn)
