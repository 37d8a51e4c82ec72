"""Atomics under real contention, the pause hint on every architecture, the clock."""

import threading

import numpy as np
import pytest
from numba import njit

import xbq.xen.atomic as atomic
from xbq.xen.atomic import (
    atomic_cas,
    atomic_fetch_add,
    atomic_load,
    atomic_store,
    atomic_xchg,
    cpu_relax,
    monotonic_ns,
    sched_yield,
)

pytestmark = pytest.mark.threads


@njit(cache=True, nogil=True)
def _hammer_add(arr, m):
    for _ in range(m):
        atomic_fetch_add(arr, 0, 1)
        atomic_fetch_add(arr, 1, 3)


@njit(cache=True, nogil=True)
def _hammer_cas(arr, m):
    """Increment ``arr[0]`` ``m`` times with a CAS loop; return the failed attempts."""
    fails = 0
    for _ in range(m):
        while True:
            old = atomic_load(arr, 0)
            if atomic_cas(arr, 0, old, old + 1) == old:
                break
            fails += 1
            cpu_relax()
    return fails


@njit(cache=True, nogil=True)
def _hammer_xchg(arr, m, out, t):
    """Pass a token around with xchg: count how many times this thread held it."""
    got = 0
    for _ in range(m):
        if atomic_xchg(arr, 0, 0) == 1:  # took the token
            got += 1
            atomic_store(arr, 0, 1)  # give it back
        sched_yield() if got % 64 == 63 else cpu_relax()
    out[t] = got


def _run(n, target, *args):
    threads = [threading.Thread(target=target, args=args) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint32])
def test_fetch_add_exact_under_contention(dtype):
    n, m = 8, 50_000
    arr = np.zeros(4, dtype)
    _run(n, _hammer_add, arr, m)
    assert int(arr[0]) == n * m and int(arr[1]) == 3 * n * m


def test_cas_increment_exact_under_contention():
    n, m = 6, 30_000
    arr = np.zeros(1, np.int64)
    _run(n, _hammer_cas, arr, m)
    assert arr[0] == n * m


def test_xchg_token_is_never_duplicated():
    n, m = 4, 20_000
    arr = np.ones(1, np.int64)  # one token
    out = np.zeros(n, np.int64)
    threads = [threading.Thread(target=_hammer_xchg, args=(arr, m, out, t)) for t in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert arr[0] == 1  # the token survived
    assert out.sum() > 0


def test_cas_returns_old_value_and_only_swaps_on_match():
    @njit
    def f(a):
        r1 = atomic_cas(a, 0, 5, 9)  # no match
        r2 = atomic_cas(a, 0, 7, 9)  # match
        return r1, r2, atomic_load(a, 0)

    assert f(np.array([7], np.int64)) == (7, 7, 9)


def test_monotonic_clock_advances():
    @njit
    def f():
        a = monotonic_ns()
        s = 0
        for i in range(100_000):
            s += i
        return a, monotonic_ns(), s

    a, b, _ = f()
    assert a > 0 and b >= a


def _pause_ir(machine, monkeypatch):
    monkeypatch.setattr(atomic, "_MACHINE", machine)

    @njit(cache=False)
    def spin():
        cpu_relax()

    spin()
    return "\n".join(spin.inspect_llvm().values())


_X86 = atomic._MACHINE in ("x86_64", "amd64", "i386", "i686")
_ARM = atomic._MACHINE in ("aarch64", "arm64")


@pytest.mark.skipif(not _X86, reason="the pause intrinsic only compiles for x86")
def test_cpu_relax_is_pause_on_x86(monkeypatch):
    assert "llvm.x86.sse2.pause" in _pause_ir(atomic._MACHINE, monkeypatch)


@pytest.mark.skipif(not _ARM, reason="the yield hint only compiles for aarch64")
def test_cpu_relax_is_yield_hint_on_aarch64(monkeypatch):
    assert "llvm.aarch64.hint" in _pause_ir(atomic._MACHINE, monkeypatch)


@pytest.mark.parametrize("machine", ["riscv64", "ppc64le", "s390x"])
def test_cpu_relax_is_a_no_op_elsewhere(machine, monkeypatch):
    ir = _pause_ir(machine, monkeypatch)
    assert "llvm.x86" not in ir and "llvm.aarch64" not in ir
