"""The hot-path kernels run without reference counting; check the contract that makes it safe.

A function under ``xbq._jit.kernel`` is compiled with numba's NRT off: it may only borrow the
arrays it is given. Allocating one would not compile; *returning* one would hand its caller a
reference that was never counted (the caller would later release it and free memory that is
still in use). ``test_no_kernel_returns_an_array`` runs, in a child with an empty JIT cache,
the loopback, the twin in each mode with its optional mechanisms on and off, and the native
engine with each lock and the ramdisk, and then checks every kernel signature those runs
compiled.
"""

import importlib
import inspect
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numba import types
from numba.core.errors import NumbaError
from numba.core.registry import CPUDispatcher

from xbq._jit import kernel

#: Every numba function of the protocol and engine layers is a kernel (the models' own
#: ``njit`` functions allocate their result arrays and are not on a hot path).
HOT_PACKAGES = ["xbq.xen", "xbq.blkif", "xbq.workload", "xbq.engines"]


def _hot_modules():
    for pkg in HOT_PACKAGES:
        yield pkg
        for info in pkgutil.walk_packages(importlib.import_module(pkg).__path__, pkg + "."):
            yield info.name


HOT_MODULES = sorted(set(_hot_modules()))


def _kernels():
    for name in HOT_MODULES:
        mod = importlib.import_module(name)
        for attr, obj in vars(mod).items():
            if isinstance(obj, CPUDispatcher) and inspect.getmodule(obj.py_func) is mod:
                yield f"{name}.{attr}", obj


def _holds_array(ty):
    if isinstance(ty, types.Array):
        return True
    if isinstance(ty, types.BaseTuple):
        return any(_holds_array(t) for t in ty.types)
    return False


def test_every_hot_function_is_a_kernel():
    plain = [name for name, d in _kernels() if d.targetoptions.get("_nrt", True)]
    assert not plain, f"hot-path functions compiled with reference counting: {plain}"


def test_no_kernel_returns_an_array(tmp_path):
    # With a warm cache nothing compiles and the dispatchers list no signatures, so the
    # protocol runs in a child with an empty cache: every kernel it reaches gets compiled.
    code = (
        "import tests.test_jit as t\n"
        "from xbq.blkif.loopback import loopback\n"
        "from xbq.blkif.negotiate import negotiate\n"
        "from xbq.engines.des.params import DesParams\n"
        "from xbq.engines.des.simulate import simulate\n"
        "from xbq.engines.native.runner import NativeConfig, run_point\n"
        "conn = negotiate(vcpus=2, max_queues=2)\n"
        "loopback(conn, nr_ios=300, batch=4, device='ramdisk')\n"
        "for p in (DesParams(), DesParams(pcpus=2, lock_mcs=1, device_ssd=1, tag_wait=1,\n"
        "                                 job_placement=1, placements=2, vcpu_wake_ns=1e3)):\n"
        "    for mode in ('sq', 'mq1', 'mq'):\n"
        "        simulate(mode, 3, queues=2, vcpus=2, iodepth=4, duration=0.002, params=p,\n"
        "                 quiet=True)\n"
        "for lock in ('ticket', 'ttas', 'mcs'):\n"
        "    run_point(NativeConfig(mode='mq', jobs=2, queues=2, vcpus=2, iodepth=4,\n"
        "                           device='ramdisk', lock=lock, duration_s=0.05,\n"
        "                           warmup_s=0.0, stall_s=30.0))\n"
        "bad = [f'{n} -> {s.return_type}' for n, d in t._kernels() "
        "for s in d.nopython_signatures if t._holds_array(s.return_type)]\n"
        "n = sum(len(d.nopython_signatures) for _, d in t._kernels())\n"
        "names = {n.rsplit('.', 2)[0] for n, d in t._kernels() if d.nopython_signatures}\n"
        "print(n, sorted(names), bad)\n"
        "assert {'xbq.engines.des', 'xbq.engines.native', 'xbq.blkif'} <= names, names\n"
        "assert n >= 100 and not bad, (n, bad)\n")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, cwd=Path(__file__).resolve().parent.parent, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]


def test_kernel_refuses_to_allocate():
    @kernel
    def alloc(n):
        return np.zeros(n).sum()

    @kernel
    def broadcast(a, b):
        a[:, :] = b

    with pytest.raises(NumbaError):
        alloc(3)
    with pytest.raises(NumbaError, match="NRT required"):
        broadcast(np.zeros((2, 2)), np.ones((2, 2)))


def test_first_compile_notice_once_per_source(tmp_path, monkeypatch, capsys):
    """A cold cache announces the compile (on a terminal); the marker silences the next run,
    and a changed source stamp (an edited module) brings the notice back."""
    import xbq._jit as J
    import xbq.engines.des.loop as mod

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(J, "_is_quiet", lambda: False)
    stamp = {"v": "a" * 64}
    monkeypatch.setattr(J, "source_stamp", lambda path: stamp["v"])
    for expect in (1, 0):
        with J.first_compile("the fakes", mod, 12):
            pass
        err = capsys.readouterr().err
        assert err.count("compiling the fakes (first run; about 12 s") == expect
    stamp["v"] = "b" * 64
    with J.first_compile("the fakes", mod, 12, quiet=True):
        pass
    assert capsys.readouterr().err == ""
    stamp["v"] = "c" * 64
    with pytest.raises(RuntimeError), J.first_compile("the fakes", mod, 12):
        raise RuntimeError  # a failed compile leaves no marker
    assert "compiling the fakes" in capsys.readouterr().err
    with J.first_compile("the fakes", mod, 12):
        pass
    assert "compiling the fakes" in capsys.readouterr().err


def test_untested_numba_is_refused_in_one_line(monkeypatch):
    from xbq._jit import NUMBA_TESTED, check_numba

    monkeypatch.delenv("XBQ_ANY_NUMBA", raising=False)
    lo, hi = NUMBA_TESTED
    check_numba(f"{lo[0]}.{lo[1]}.0")
    check_numba(f"{hi[0]}.{hi[1]}.9")
    for bad in (f"{hi[0]}.{hi[1] + 1}.0", "0.50.1", "garbage"):
        with pytest.raises(ImportError, match=f"found {bad}") as err:
            check_numba(bad)
        assert "\n" not in str(err.value)
    monkeypatch.setenv("XBQ_ANY_NUMBA", "1")
    check_numba("0.50.1")
