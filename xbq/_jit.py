"""A numba JIT cache that cannot go stale, and survives edits to unrelated modules.

numba's on-disk cache checks only the timestamp of the file that holds a jitted function,
not of the modules it calls: edit ``xbq/xen/ring.py`` and a cached kernel in
``xbq/blkif/blkback.py`` would still run the old ring code. xbq therefore registers its own
cache locator for its package: the "source stamp" of a file is a hash of that file and of
every ``xbq`` module it imports, transitively, plus the bounds-checking switch. Editing
``xen/ring.py`` invalidates every kernel that depends on it and nothing else. The directory
is ``$NUMBA_CACHE_DIR`` when set (the Makefile sets it to ``.numba_cache`` in the checkout,
and CI starts that empty), else ``~/.cache/xbq/numba``.

It also defines :func:`kernel`, the decorator of every hot-path function (protocol core,
engines): ``njit`` with caching, ``nogil`` and numba's reference counting switched off, and
:func:`first_compile`, which tells the user when a cold cache means a compile is coming.

Both lean on numba internals (the ``_nrt`` target option, ``caching.CacheImpl``'s locator
list, ``UserProvidedCacheLocator``), so importing xbq with a numba outside
:data:`NUMBA_TESTED` stops with a one-line error (``XBQ_ANY_NUMBA=1`` tries anyway).

This module must be imported before any module that defines an ``@njit(cache=True)``
function; ``xbq/__init__.py`` does so.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import numba
from numba import njit
from numba.core import caching, config

_PKG = Path(__file__).resolve().parent

#: numba releases (major, minor) xbq's test suite has passed on: the first and the last.
NUMBA_TESTED = ((0, 61), (0, 68))


def check_numba(version: str = numba.__version__) -> None:
    """Refuse a numba release outside :data:`NUMBA_TESTED` (unless ``XBQ_ANY_NUMBA=1``).

    Raises
    ------
    ImportError
        One line naming the version found and the versions tested.
    """
    try:
        found = tuple(int(x) for x in version.split(".")[:2])
    except ValueError:
        found = None
    lo, hi = NUMBA_TESTED
    if (found is None or not lo <= found <= hi) and not os.environ.get("XBQ_ANY_NUMBA"):
        raise ImportError(
            f"xbq needs numba {lo[0]}.{lo[1]} to {hi[0]}.{hi[1]} (it uses numba internals: "
            f"the _nrt option and the cache locators), found {version}; install a tested "
            "release (pip install 'numba>=0.61,<0.69') or set XBQ_ANY_NUMBA=1 to try anyway")


check_numba()


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
    h = hashlib.sha256(f"boundscheck={config.BOUNDSCHECK} inline={_FORCEINLINE}".encode())
    for p in sorted(seen):
        h.update(p.relative_to(_PKG).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


#: numba 0.61 calls it ``_UserProvidedCacheLocator``; later releases drop the underscore.
_UserLocator = getattr(caching, "UserProvidedCacheLocator", None) or \
    caching._UserProvidedCacheLocator


class _XbqCacheLocator(_UserLocator):
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


#: ``XBQ_NO_FORCEINLINE=1`` compiles every kernel without LLVM's forced inlining (for the
#: measurement in docs/benchmarks.md; its cache entries are apart from the others).
_FORCEINLINE = not os.environ.get("XBQ_NO_FORCEINLINE")


def kernel(fn=None, **options):
    """``numba.njit(cache=True, nogil=True)`` without numba's reference counting (NRT).

    The protocol core and the engines keep their state in structured record arrays, one per
    lifetime. With NRT on, numba increments and decrements the reference count of every
    array argument on entry and exit: an atomic read-modify-write apiece, several calls per
    request -- and, when threads share the state, a cache line bounced between CPUs on every
    one, a contention the kernel does not have. A function under ``@kernel`` only *borrows*
    arrays: it never allocates one and never returns one (``tests/test_jit.py`` checks
    both), so nothing in it needs counting, and numba compiles it with NRT disabled (its
    ``_nrt`` option). The arrays live as long as the Python objects that own them.

    Use as ``@kernel`` or ``@kernel(forceinline=True)`` (LLVM-level inlining of a small
    hot function into its callers; numba's IR inlining, ``inline="always"``, is not used);
    ``options`` go to ``numba.njit``.
    """
    options = {"cache": True, "nogil": True, "_nrt": False, **options}
    if not _FORCEINLINE:
        options.pop("forceinline", None)
    if fn is None:
        return lambda f: njit(**options)(f)
    return njit(**options)(fn)


def _is_quiet() -> bool:
    return not sys.stderr.isatty() or bool(os.environ.get("XBQ_QUIET"))


@contextmanager
def first_compile(what: str, module, seconds: float, *, quiet: bool = False):
    """Print a one-line notice on stderr when the kernels of ``module`` are not cached yet.

    A marker named by the module's :func:`source_stamp` (which covers every xbq module it
    imports) and numba's version is written to the cache once the body succeeds; while it is
    missing, the cache is cold for that code and the body will compile it.

    Parameters
    ----------
    what : str
        What is compiling, e.g. ``"the discrete-event twin"``.
    module : module
        The module whose kernels the body calls first (its imports are covered too).
    seconds : float
        Typical cold compile time on 2 cores (s), quoted in the notice.
    quiet : bool
        No notice (``--json``); it is also silent when stderr is no terminal or
        ``XBQ_QUIET`` is set.
    """
    stamp = source_stamp(Path(module.__file__).resolve())[:20]
    marker = cache_dir() / "warm" / f"{module.__name__}-{numba.__version__}-{stamp}"
    if not marker.exists() and not quiet and not _is_quiet():
        print(f"xbq: compiling {what} (first run; about {seconds:.0f} s, cached afterwards)",
              file=sys.stderr, flush=True)
    yield
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:  # a read-only cache only loses the notice
        pass
