"""Atomics, barriers, the CPU's pause hint, ``sched_yield``, futexes and clocks, in numba.

These are ``@intrinsic`` functions that emit LLVM's own atomic instructions (``load atomic``,
``store atomic``, ``atomicrmw``, ``cmpxchg``, ``fence``), so they work on any NumPy integer
array (or on one field of a record array) inside nopython code, including ``nogil`` code
running on several OS threads at once. The ring macros (:mod:`xbq.xen.ring`) use them for
the four shared indices, exactly where ring.h puts its barriers; the native engine builds its
spinlocks from them.

Memory orders follow the Linux names: :func:`smp_mb` is a full (sequentially consistent)
fence, :func:`smp_wmb` a release fence and :func:`smp_rmb` an acquire fence. Linux's
``virt_mb``/``virt_wmb``/``virt_rmb`` are the same barriers (SMP barriers even on a
uniprocessor build, since the peer runs in another domain).

Every function here compiles to a handful of instructions and is safe to call from a single
thread (the discrete-event engine) as well.

External symbols (``sched_yield``, ``clock_gettime``, ``syscall`` for the futex
calls) are declared by name in the emitted LLVM module and resolved when the code is loaded,
so functions that use them stay cacheable.
"""

from __future__ import annotations

import platform

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_MACHINE = platform.machine().lower()
CLOCK_MONOTONIC = 1


def _check_int_array(arr, name):
    if not (isinstance(arr, types.Array) and isinstance(arr.dtype, types.Integer)):
        raise TypeError(f"{name} needs an integer array, got {arr}")


def _item_pointer(context, builder, aty, ary_val, idx_val, idx_ty):
    ary = context.make_array(aty)(context, builder, ary_val)
    idx = context.cast(builder, idx_val, idx_ty, types.intp)
    return cgutils.get_item_pointer(context, builder, aty, ary, [idx], wraparound=False)


@intrinsic
def atomic_load(typingctx, arr, idx):
    """``arr[idx]`` as an acquire load (``READ_ONCE`` followed by a read barrier)."""
    _check_int_array(arr, "atomic_load")
    sig = arr.dtype(arr, idx)

    def codegen(context, builder, signature, args):
        aty, ity = signature.args
        ptr = _item_pointer(context, builder, aty, args[0], args[1], ity)
        return builder.load_atomic(ptr, "acquire", signature.args[0].dtype.bitwidth // 8)

    return sig, codegen


@intrinsic
def atomic_store(typingctx, arr, idx, val):
    """``arr[idx] = val`` as a release store (write barrier, then ``WRITE_ONCE``)."""
    _check_int_array(arr, "atomic_store")
    sig = types.void(arr, idx, val)

    def codegen(context, builder, signature, args):
        aty = signature.args[0]
        ptr = _item_pointer(context, builder, aty, args[0], args[1], signature.args[1])
        v = context.cast(builder, args[2], signature.args[2], aty.dtype)
        builder.store_atomic(v, ptr, "release", aty.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return sig, codegen


def _rmw(op):
    def impl(typingctx, arr, idx, val):
        _check_int_array(arr, f"atomic_{op}")
        sig = arr.dtype(arr, idx, val)

        def codegen(context, builder, signature, args):
            aty = signature.args[0]
            ptr = _item_pointer(context, builder, aty, args[0], args[1], signature.args[1])
            v = context.cast(builder, args[2], signature.args[2], aty.dtype)
            return builder.atomic_rmw(op, ptr, v, "seq_cst")

        return sig, codegen

    return impl


atomic_fetch_add = intrinsic(_rmw("add"))
atomic_fetch_add.__doc__ = "Add ``val`` to ``arr[idx]`` atomically; return the old value."
atomic_xchg = intrinsic(_rmw("xchg"))
atomic_xchg.__doc__ = "Store ``val`` in ``arr[idx]`` atomically; return the old value."


@intrinsic
def atomic_cas(typingctx, arr, idx, expected, new):
    """Compare-and-exchange ``arr[idx]``: store ``new`` if it holds ``expected``.

    Returns the value found, so the exchange happened if and only if it equals ``expected``.
    """
    _check_int_array(arr, "atomic_cas")
    sig = arr.dtype(arr, idx, expected, new)

    def codegen(context, builder, signature, args):
        aty = signature.args[0]
        ptr = _item_pointer(context, builder, aty, args[0], args[1], signature.args[1])
        exp = context.cast(builder, args[2], signature.args[2], aty.dtype)
        new_v = context.cast(builder, args[3], signature.args[3], aty.dtype)
        pair = builder.cmpxchg(ptr, exp, new_v, "seq_cst", "seq_cst")
        return builder.extract_value(pair, 0)

    return sig, codegen


def _field_pointer(context, builder, aty, ary_val, idx_val, idx_ty, off_val, off_ty, nbits):
    """Pointer to the ``nbits`` integer at byte ``off`` of element ``idx`` (any dtype)."""
    base = _item_pointer(context, builder, aty, ary_val, idx_val, idx_ty)
    i8 = builder.bitcast(base, ir.IntType(8).as_pointer())
    off = context.cast(builder, off_val, off_ty, types.intp)
    return builder.bitcast(builder.gep(i8, [off]), ir.IntType(nbits).as_pointer())


_FIELD_TYPES = {16: types.uint16, 32: types.uint32, 64: types.int64}


def _field(kind, nbits, op=None):
    rty = _FIELD_TYPES[nbits]

    def typer(arr):
        if not isinstance(arr, types.Array):
            raise TypeError(f"a field atomic needs an array, got {arr}")

    if kind == "load":
        def impl(typingctx, arr, idx, off):
            typer(arr)

            def codegen(context, builder, sig, args):
                ptr = _field_pointer(context, builder, sig.args[0], args[0], args[1],
                                     sig.args[1], args[2], sig.args[2], nbits)
                return builder.load_atomic(ptr, "acquire", nbits // 8)

            return rty(arr, idx, off), codegen
    elif kind == "store":
        def impl(typingctx, arr, idx, off, val):
            typer(arr)

            def codegen(context, builder, sig, args):
                ptr = _field_pointer(context, builder, sig.args[0], args[0], args[1],
                                     sig.args[1], args[2], sig.args[2], nbits)
                builder.store_atomic(context.cast(builder, args[3], sig.args[3], rty), ptr,
                                     "release", nbits // 8)
                return context.get_dummy_value()

            return types.void(arr, idx, off, val), codegen
    elif kind == "rmw":
        def impl(typingctx, arr, idx, off, val):
            typer(arr)

            def codegen(context, builder, sig, args):
                ptr = _field_pointer(context, builder, sig.args[0], args[0], args[1],
                                     sig.args[1], args[2], sig.args[2], nbits)
                return builder.atomic_rmw(op, ptr, context.cast(builder, args[3], sig.args[3],
                                                                rty), "seq_cst")

            return rty(arr, idx, off, val), codegen
    else:
        def impl(typingctx, arr, idx, off, expected, new):
            typer(arr)

            def codegen(context, builder, sig, args):
                ptr = _field_pointer(context, builder, sig.args[0], args[0], args[1],
                                     sig.args[1], args[2], sig.args[2], nbits)
                exp = context.cast(builder, args[3], sig.args[3], rty)
                new_v = context.cast(builder, args[4], sig.args[4], rty)
                pair = builder.cmpxchg(ptr, exp, new_v, "seq_cst", "seq_cst")
                return builder.extract_value(pair, 0)

            return rty(arr, idx, off, expected, new), codegen
    return intrinsic(impl)


# Atomics on one field of a record array element: ``arr[idx]`` is any record (or integer)
# element, ``off`` the field's byte offset in it (``DTYPE.fields[name][1]``). They let one
# structure per lifetime carry the words other threads race on: an event port's pending and
# mask bits, a grant entry's flags (and, as Xen's ``_set_status_v1`` swaps them, flags and
# domid as one 32-bit word), the counters a whole domain shares.
#: Acquire load / release store of a u32 or int64 field.
load_u32_at = _field("load", 32)
store_u32_at = _field("store", 32)
load_i64_at = _field("load", 64)
store_i64_at = _field("store", 64)
#: Exchange a u32 field; return the old value.
xchg_u32_at = _field("rmw", 32, "xchg")
#: Add to an int64 field; return the old value.
add_i64_at = _field("rmw", 64, "add")
#: Locked ``and`` of a u16 field (Xen's ``gnttab_clear_flag``); return the old value.
and_u16_at = _field("rmw", 16, "and")
#: ``cmpxchg`` of a u16 / u32 field: returns the value found, so the exchange happened iff it
#: equals ``expected``.
cmpxchg_u16_at = _field("cas", 16)
cmpxchg_u32_at = _field("cas", 32)
cmpxchg_i64_at = _field("cas", 64)


def _fence(ordering):
    def impl(typingctx):
        sig = types.void()

        def codegen(context, builder, signature, args):
            builder.fence(ordering)
            return context.get_dummy_value()

        return sig, codegen

    return impl


smp_mb = intrinsic(_fence("seq_cst"))
smp_mb.__doc__ = "Full barrier: no load or store moves across it (x86 ``mfence``)."

smp_wmb = intrinsic(_fence("release"))
smp_wmb.__doc__ = "Write barrier: earlier accesses complete before later stores."
smp_rmb = intrinsic(_fence("acquire"))
smp_rmb.__doc__ = "Read barrier: earlier loads complete before later accesses."


@intrinsic
def cpu_relax(typingctx):
    """The spin-wait hint: x86 ``pause``, aarch64 ``yield``, nothing elsewhere."""
    sig = types.void()

    def codegen(context, builder, signature, args):
        if _MACHINE in ("x86_64", "amd64", "i386", "i686"):
            fty = ir.FunctionType(ir.VoidType(), [])
            fn = cgutils.get_or_insert_function(builder.module, fty, "llvm.x86.sse2.pause")
            builder.call(fn, [])
        elif _MACHINE in ("aarch64", "arm64"):
            fty = ir.FunctionType(ir.VoidType(), [ir.IntType(32)])
            fn = cgutils.get_or_insert_function(builder.module, fty, "llvm.aarch64.hint")
            builder.call(fn, [ir.Constant(ir.IntType(32), 1)])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def sched_yield(typingctx):
    """Give the CPU to another runnable thread (the libc call); returns its status."""
    sig = types.int32()

    def codegen(context, builder, signature, args):
        fty = ir.FunctionType(ir.IntType(32), [])
        fn = cgutils.get_or_insert_function(builder.module, fty, "sched_yield")
        return builder.call(fn, [])

    return sig, codegen


@intrinsic
def monotonic_ns(typingctx):
    """``clock_gettime(CLOCK_MONOTONIC)`` in nanoseconds, as an int64."""
    sig = types.int64()

    def codegen(context, builder, signature, args):
        return _clock_ns(builder)

    return sig, codegen


def _clock_ns(builder):
    """``clock_gettime(CLOCK_MONOTONIC)`` in nanoseconds, as LLVM IR (an i64)."""
    i32, i64 = ir.IntType(32), ir.IntType(64)
    timespec = ir.LiteralStructType([i64, i64])
    fty = ir.FunctionType(i32, [i32, timespec.as_pointer()])
    fn = cgutils.get_or_insert_function(builder.module, fty, "clock_gettime")
    ts = cgutils.alloca_once(builder, timespec)
    builder.call(fn, [ir.Constant(i32, CLOCK_MONOTONIC), ts])
    zero = ir.Constant(i32, 0)
    sec = builder.load(builder.gep(ts, [zero, zero]))
    nsec = builder.load(builder.gep(ts, [zero, ir.Constant(i32, 1)]))
    return builder.add(builder.mul(sec, ir.Constant(i64, 1_000_000_000)), nsec)


# --- futex: block a thread on a word until another wakes it ----------------------------------

#: ``SYS_futex`` by architecture, and the private wait / wake operations of futex(2).
_SYS_FUTEX = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98}
FUTEX_WAIT_PRIVATE = 128
FUTEX_WAKE_PRIVATE = 129


def _futex_call(builder, addr, op, val, timeout):
    """``syscall(SYS_futex, addr, op, val, timeout, NULL, 0)`` as LLVM IR; returns its i64."""
    i64 = ir.IntType(64)
    nr = _SYS_FUTEX.get(_MACHINE)
    if nr is None:
        raise NotImplementedError(f"futex: no syscall number known for {_MACHINE}")
    fty = ir.FunctionType(i64, [i64], var_arg=True)
    fn = cgutils.get_or_insert_function(builder.module, fty, "syscall")
    null = ir.Constant(ir.IntType(8).as_pointer(), None)
    # every variadic argument as a full register (syscall(2) reads them as longs)
    return builder.call(fn, [ir.Constant(i64, nr), addr, ir.Constant(i64, op),
                             builder.zext(val, i64), timeout, null, ir.Constant(i64, 0)])


@intrinsic
def futex_wait(typingctx, arr, idx, expected, timeout_ns):
    """Sleep while the low 32 bits of ``arr[idx]`` equal ``expected``, at most ``timeout_ns``.

    Linux ``futex(FUTEX_WAIT_PRIVATE)`` on the low half of the int64 word (little-endian):
    returns at once when the word no longer holds ``expected``, when :func:`futex_wake` is
    called on it, on a signal, or after the timeout. Callers recheck their condition; the
    return value (0, or -1 with errno set) carries nothing they need.
    """
    _check_int_array(arr, "futex_wait")
    sig = types.int64(arr, idx, expected, timeout_ns)

    def codegen(context, builder, signature, args):
        i32, i64 = ir.IntType(32), ir.IntType(64)
        ptr = _item_pointer(context, builder, signature.args[0], args[0], args[1],
                            signature.args[1])
        addr = builder.bitcast(ptr, i32.as_pointer())
        val = builder.trunc(context.cast(builder, args[2], signature.args[2], types.int64), i32)
        ns = context.cast(builder, args[3], signature.args[3], types.int64)
        timespec = ir.LiteralStructType([i64, i64])
        ts = cgutils.alloca_once(builder, timespec)
        zero = ir.Constant(i32, 0)
        billion = ir.Constant(i64, 1_000_000_000)
        builder.store(builder.sdiv(ns, billion), builder.gep(ts, [zero, zero]))
        builder.store(builder.srem(ns, billion), builder.gep(ts, [zero, ir.Constant(i32, 1)]))
        return _futex_call(builder, addr, FUTEX_WAIT_PRIVATE, val, ts)

    return sig, codegen


@intrinsic
def futex_wake(typingctx, arr, idx, n):
    """Wake up to ``n`` threads sleeping in :func:`futex_wait` on ``arr[idx]``; returns how
    many were woken (``futex(FUTEX_WAKE_PRIVATE)``)."""
    _check_int_array(arr, "futex_wake")
    sig = types.int64(arr, idx, n)

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        ptr = _item_pointer(context, builder, signature.args[0], args[0], args[1],
                            signature.args[1])
        addr = builder.bitcast(ptr, i32.as_pointer())
        cnt = builder.trunc(context.cast(builder, args[2], signature.args[2], types.int64), i32)
        null = ir.Constant(ir.LiteralStructType([ir.IntType(64)] * 2).as_pointer(), None)
        return _futex_call(builder, addr, FUTEX_WAKE_PRIVATE, cnt, null)

    return sig, codegen


@intrinsic
def cpu_cycles(typingctx):
    """A cheap monotonic counter for accounting time: the TSC on x86 (``rdtsc``, a few ns
    where ``clock_gettime`` costs 20), nanoseconds of ``CLOCK_MONOTONIC`` elsewhere. Convert
    with the ratio of :func:`monotonic_ns` to it over a window (see the native engine)."""
    sig = types.int64()

    def codegen(context, builder, signature, args):
        if _MACHINE in ("x86_64", "amd64"):
            fty = ir.FunctionType(ir.IntType(64), [])
            fn = cgutils.get_or_insert_function(builder.module, fty, "llvm.readcyclecounter")
            return builder.call(fn, [])
        return _clock_ns(builder)

    return sig, codegen
