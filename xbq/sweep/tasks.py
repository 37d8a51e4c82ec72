"""One sweep point, run where a worker runs it: the twin or the native engine, its row with
the point's configuration; an error becomes a row that says what failed, never an exception
that stops the sweep."""

from __future__ import annotations

import math
import socket
from contextlib import nullcontext

from xbq.engines.des.params import FIELDS as DES_FIELDS
from xbq.engines.schema import COLUMNS

#: Configuration entries that are bookkeeping, not columns of the row.
_NOT_COLUMNS = ("base_params",)


def _des(point: dict) -> dict:
    from xbq.engines.des.params import DesParams
    from xbq.engines.des.simulate import simulate

    base = DesParams(**point["base_params"]) if point.get("base_params") else DesParams()
    params = base.replace(**{k: float(v) for k, v in point.items() if k in DES_FIELDS})
    kw = {k: point[k] for k in ("warmup", "bssplit", "rwmixread") if k in point}
    df = simulate(point["mode"], int(point["jobs"]), queues=int(point["queues"]),
                  vcpus=int(point["vcpus"]), iodepth=int(point["iodepth"]),
                  duration=float(point["duration"]), seed=int(point["seed"]), params=params,
                  rep=int(point["rep"]), quiet=True, **kw)
    return df.iloc[0].to_dict()


def _native_lock():
    """Native points never run two at a time on one host (they would measure each other):
    inside a Dask worker, a cluster-wide lock named after the host serialises them."""
    try:
        from distributed import Lock, get_worker

        get_worker()
    except (ImportError, ValueError):
        return nullcontext()
    return Lock(f"xbq-native-{socket.gethostname()}")


def _native(point: dict) -> dict:
    from xbq.engines.native.runner import NativeConfig, run_point

    kw = {k: point[k] for k in ("bssplit", "rwmixread") if k in point}
    cfg = NativeConfig(mode=point["mode"], jobs=int(point["jobs"]),
                       queues=int(point["queues"]), vcpus=int(point["vcpus"]),
                       iodepth=int(point["iodepth"]), device=point["device"],
                       ring_page_order=int(point["ring_page_order"]), lock=point["lock"],
                       duration_s=float(point["duration"]), warmup_s=float(point["warmup"]),
                       seed=int(point["seed"]), rep=int(point["rep"]), **kw)
    with _native_lock():
        return run_point(cfg)


def failed_row(point: dict, error: str) -> dict:
    """The row of a point that could not run: its configuration, NaN figures, the error."""
    row = dict.fromkeys(COLUMNS, math.nan)
    row.update({k: v for k, v in point.items() if k not in _NOT_COLUMNS})
    row["error"] = error
    return row


def run_point(point: dict) -> dict:
    """Run one sweep point; return its row (``point_key`` the sweep's, every configuration
    entry a column) or, when it fails, :func:`failed_row`."""
    try:
        row = _des(point) if point["engine"] == "des" else _native(point)
    except Exception as exc:  # recorded in the store; the sweep goes on
        return failed_row(point, f"{type(exc).__name__}: {' '.join(str(exc).split())}")
    for k, v in point.items():
        if k not in _NOT_COLUMNS and k not in row:
            row[k] = v
    row["point_key"] = point["point_key"]
    row["worker_host"] = socket.gethostname()
    return row
