"""fio in and out: the seed's IOmeter job file, fio's JSON results as a tidy table, and xbq's
own results written as fio JSON.

* :func:`job_file` writes fio's IOmeter file-server job (``examples/iometer-file-access-server.fio``
  in fio's repository, as the 2015 letter ran it) with one stonewalled section per job count,
  so one ``fio`` run on a Xen guest reproduces a whole row of the seed table.
* :func:`read_fio_json` reads fio 3.x ``--output-format=json`` or ``json+`` (per-job or
  ``group_reporting``; text around the JSON, as ``--output-format=normal,json`` writes, is
  skipped) and :func:`import_fio` turns one or many files into the tidy IOPS table that
  ``xbq fit``, ``xbq calibrate`` and the notebooks read: one row per job section, ``jobs``
  from ``numjobs``, ``iops`` = read + write, latency percentiles kept.
* :func:`to_fio_json` writes rows of either engine in fio's JSON shape (one job section per
  point, as ``group_reporting`` would report it), so tools that read fio results read xbq's.

Everything that cannot be read gets one line (:class:`xbq.errors.XbqError`): malformed or
truncated JSON, fio's terse format, a file without jobs.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

from xbq import __version__
from xbq.errors import XbqError
from xbq.workload.fio import IOMETER_BSSPLIT, IOMETER_RWMIXREAD

#: The 2015 job counts, and fio's IOmeter job's settings (``iodepth=64``: its "moderate" load).
SEED_JOBS = (1, 4, 8, 16, 32, 64)
IOMETER_OPTIONS = {"bssplit": IOMETER_BSSPLIT, "rw": "randrw",
                   "rwmixread": str(IOMETER_RWMIXREAD), "direct": "1", "ioengine": "libaio",
                   "iodepth": "64", "size": "4g"}
#: Percentiles kept from fio's ``clat_ns`` (fio's keys, and the tidy table's suffixes).
PERCENTILES = {"50.000000": "p50", "99.000000": "p99", "99.900000": "p999"}


# --- job files --------------------------------------------------------------------------------


def job_file(jobs=SEED_JOBS, *, iodepth: int = 64, filename: str = "/dev/xvdb",
             runtime_s: float = 60, ramp_s: float = 5, size: str = "4g",
             ioengine: str = "libaio", name: str = "iometer", group_reporting: bool = True,
             bssplit: str = IOMETER_BSSPLIT, rwmixread: float = IOMETER_RWMIXREAD) -> str:
    """fio's IOmeter file-server job, one stonewalled section per job count.

    Parameters
    ----------
    jobs : sequence of int
        ``numjobs`` of each section (``<name>-jobs<N>``), run one after another.
    iodepth : int
        I/Os each job keeps in flight (fio's IOmeter job: 64).
    filename : str
        The device or file (a Xen guest's second disk is ``/dev/xvdb``).
    runtime_s, ramp_s : float
        Measured seconds per section and the ramp before it (``time_based``).
    size, ioengine : str
        fio's ``size`` (the region the random offsets fall in) and ``ioengine``.
    group_reporting : bool
        Report each section as one group (one JSON entry per job count).
    bssplit, rwmixread : str, float
        The mix (default: IOmeter's).

    Returns
    -------
    str
        The job file; run it with ``fio --output-format=json+ FILE > result.json``.
    """
    jobs = [int(j) for j in jobs]
    if not jobs or min(jobs) < 1:
        raise XbqError("jobs must be a non-empty list of integers >= 1")
    if iodepth < 1 or runtime_s <= 0 or ramp_s < 0:
        raise XbqError("iodepth must be >= 1, runtime > 0 and ramp >= 0")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise XbqError(f"job name {name!r} may only hold letters, digits, '_', '.', '-'")
    opts = {"description": "Emulation of Intel IOmeter File Server Access Pattern "
                           "(fio examples/iometer-file-access-server.fio), written by xbq",
            "filename": filename, "bssplit": bssplit, "rw": "randrw",
            "rwmixread": f"{rwmixread:g}", "direct": "1", "ioengine": ioengine,
            "iodepth": str(iodepth), "size": size, "time_based": "1",
            "runtime": f"{round(runtime_s * 1000)}ms", "ramp_time": f"{round(ramp_s * 1000)}ms"}
    if group_reporting:
        opts["group_reporting"] = "1"
    lines = [f"; xbq {__version__}: fio's IOmeter job for numjobs {','.join(map(str, jobs))}",
             "; run: fio --output-format=json+ THIS_FILE > result.json",
             "; then: xbq fio import result.json --series NAME --out table.csv", "",
             "[global]"]
    lines += [f"{k}={v}" for k, v in opts.items()]
    for j in jobs:
        lines += ["", f"[{name}-jobs{j}]", "stonewall", f"numjobs={j}"]
    return "\n".join(lines) + "\n"


# --- reading fio's JSON ---------------------------------------------------------------------


def read_fio_json(path) -> dict:
    """Parse one fio JSON (or JSON+) result file.

    Text before the JSON object (``--output-format=normal,json``, warnings) and after it is
    ignored. Raises a one-line :class:`XbqError` for a missing file, fio's terse format,
    malformed or truncated JSON, and a result without jobs.
    """
    p = Path(path)
    try:
        text = p.read_text(errors="replace")
    except OSError as exc:
        raise XbqError(f"cannot read {p}: {exc.strerror}") from None
    start = text.find("{")
    if start < 0:
        if re.match(r"\s*\d+;fio-", text):
            raise XbqError(f"{p} is fio's terse format; rerun fio with "
                           "--output-format=json (or json+)")
        raise XbqError(f"{p} holds no fio JSON (run fio with --output-format=json)")
    try:
        data, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as exc:
        what = "truncated" if exc.pos >= len(text[start:].rstrip()) else "malformed"
        raise XbqError(f"{p}: {what} JSON at line {exc.lineno} column {exc.colno} "
                       f"({exc.msg})") from None
    if not isinstance(data, dict):
        raise XbqError(f"{p}: fio JSON must be an object, not {type(data).__name__}")
    jobs = data.get("jobs", data.get("client_stats"))
    if not isinstance(jobs, list) or not jobs:
        raise XbqError(f"{p}: no jobs in this fio result")
    return data


def _num(section: dict, key: str, where: str) -> float:
    try:
        v = float(section[key])
    except (KeyError, TypeError, ValueError):
        raise XbqError(f"{where}: missing or non-numeric '{key}'") from None
    if not math.isfinite(v) or v < 0:
        raise XbqError(f"{where}: '{key}' must be a finite number >= 0, not {v}")
    return v


def _option(job: dict, glob: dict, key: str, default: str) -> str:
    return str(job.get("job options", {}).get(key, glob.get(key, default)))


def _int_option(job: dict, glob: dict, key: str, where: str) -> int:
    raw = _option(job, glob, key, "1")
    try:
        v = int(float(raw))
    except ValueError:
        raise XbqError(f"{where}: {key}={raw!r} is not a number") from None
    if v < 1:
        raise XbqError(f"{where}: {key} must be >= 1, not {v}")
    return v


def _bins(direction: dict) -> dict | None:
    bins = direction.get("clat_ns", {}).get("bins")
    return {int(k): int(v) for k, v in bins.items()} if isinstance(bins, dict) else None


def _quantile_from_bins(bins: dict, q: float) -> float:
    """The ``q`` quantile (0-1) of a merged fio latency histogram (ns -> count), in ns."""
    if not bins:
        return float("nan")
    keys = np.array(sorted(bins), dtype=np.float64)
    counts = np.array([bins[int(k)] for k in keys], dtype=np.float64)
    cum = np.cumsum(counts)
    return float(keys[np.searchsorted(cum, q * cum[-1], side="left")])


def _group(entries: list[dict], glob: dict, where: str) -> dict:
    """One row from the entries of one job section (one with group_reporting, ``numjobs``
    clones without it)."""
    first = entries[0]
    row = {"jobname": first.get("jobname", ""), "groupid": int(first.get("groupid", 0)),
           "jobs": _int_option(first, glob, "numjobs", where),
           "iodepth": _int_option(first, glob, "iodepth", where),
           "fio_entries": len(entries)}
    for opt in ("rw", "bs", "bssplit", "rwmixread", "ioengine", "filename"):
        row[opt] = _option(first, glob, opt, "")
    total_iops = 0.0
    merged_bins: dict = {}
    have_bins = True
    lat_sum = lat_n = 0.0
    for d in ("read", "write"):
        iops = bw = ios = 0.0
        d_sum = d_n = 0.0
        d_bins: dict = {}
        for e in entries:
            sec = e.get(d)
            if not isinstance(sec, dict):
                raise XbqError(f"{where}: job '{row['jobname']}' has no '{d}' section")
            iops += _num(sec, "iops", f"{where} ({d})")
            if "bw_bytes" in sec:
                bw += _num(sec, "bw_bytes", f"{where} ({d})")
            elif "bw" in sec:  # KiB/s
                bw += 1024 * _num(sec, "bw", f"{where} ({d})")
            else:
                bw = float("nan")
            ios += float(sec.get("total_ios", 0) or 0)
            clat = sec.get("clat_ns", {})
            n = float(clat.get("N", 0) or 0)
            d_n += n
            d_sum += n * float(clat.get("mean", 0) or 0)
            b = _bins(sec)
            if b is None:
                have_bins = False
            else:
                for k, v in b.items():
                    d_bins[k] = d_bins.get(k, 0) + v
        row[f"{d}_iops"] = iops
        row[f"{d}_bw_bytes"] = bw
        row[f"{d}_ios"] = ios
        row[f"{d}_clat_mean_us"] = d_sum / d_n / 1e3 if d_n else float("nan")
        pct = entries[0].get(d, {}).get("clat_ns", {}).get("percentile", {})
        for key, suffix in PERCENTILES.items():
            if len(entries) == 1 and key in pct:  # fio's own figure
                row[f"{d}_clat_{suffix}_us"] = float(pct[key]) / 1e3
            elif have_bins and d_bins:
                row[f"{d}_clat_{suffix}_us"] = _quantile_from_bins(
                    d_bins, float(key) / 100) / 1e3
            else:  # clones' percentiles cannot be merged without json+ bins
                row[f"{d}_clat_{suffix}_us"] = float("nan")
        total_iops += iops
        lat_sum += d_sum
        lat_n += d_n
        for k, v in d_bins.items():
            merged_bins[k] = merged_bins.get(k, 0) + v
    row["iops"] = total_iops
    row["mbps"] = (row["read_bw_bytes"] + row["write_bw_bytes"]) / 1e6
    row["lat_mean_us"] = lat_sum / lat_n / 1e3 if lat_n else float("nan")
    for key, suffix in PERCENTILES.items():  # reads and writes together: needs json+ bins
        row[f"lat_{suffix}_us"] = (_quantile_from_bins(merged_bins, float(key) / 100) / 1e3
                                   if have_bins and merged_bins else float("nan"))
    runtimes = [float(e.get("job_runtime", e.get("read", {}).get("runtime", 0)) or 0)
                for e in entries]
    row["runtime_s"] = max(runtimes) / 1e3
    row["errors"] = int(sum(int(e.get("error", 0) or 0) for e in entries))
    return row


def fio_rows(data: dict, where: str = "fio result") -> list[dict]:
    """The rows of one parsed fio result: one per job section (``jobname``, ``groupid``),
    clones of a ``numjobs`` job without ``group_reporting`` summed."""
    glob = data.get("global options", {}) or {}
    jobs = data.get("jobs", data.get("client_stats"))
    groups: dict = {}
    for k, job in enumerate(jobs):
        if not isinstance(job, dict):
            raise XbqError(f"{where}: job entry {k} is not an object")
        if job.get("jobname") == "All clients":  # client/server mode's summary entry
            continue
        groups.setdefault((job.get("jobname", ""), job.get("groupid", 0)), []).append(job)
    if not groups:
        raise XbqError(f"{where}: no jobs in this fio result")
    rows = [_group(entries, glob, where) for entries in groups.values()]
    for r in rows:
        r["fio_version"] = str(data.get("fio version", ""))
        r["timestamp"] = int(data.get("timestamp", 0) or 0)
    return rows


def import_fio(paths, *, series: str | None = None, series_pattern: str | None = None
               ) -> pd.DataFrame:
    """Read fio JSON files into the tidy IOPS table (:mod:`xbq.study.datasets`' shape).

    Parameters
    ----------
    paths : path or sequence of paths
        fio ``--output-format=json`` or ``json+`` files; every job section is a row.
    series : str, optional
        Name of the series every row belongs to (e.g. ``multi_ring``).
    series_pattern : str, optional
        A regular expression matched against each job's name; its group ``series`` (or its
        first group, or the whole match) names the row's series. Without either option the
        job name, less a trailing ``-jobs<N>``, is the series.

    Returns
    -------
    pandas.DataFrame
        ``series, jobs, iops`` first (``jobs`` is ``numjobs``; ``iops`` read + write), then
        ``iodepth, read_iops, write_iops, mbps, lat_mean_us, lat_p50_us, lat_p99_us,
        lat_p999_us`` (reads and writes together; percentiles need json+ bins),
        per-direction ``read_clat_p50_us`` ..., the job's options, ``file``.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise XbqError("no fio result files given")
    if series is not None and series_pattern is not None:
        raise XbqError("give --series or --series-pattern, not both")
    rx = None
    if series_pattern is not None:
        try:
            rx = re.compile(series_pattern)
        except re.error as exc:
            raise XbqError(f"bad --series-pattern {series_pattern!r}: {exc}") from None
    rows = []
    for path in paths:
        for r in fio_rows(read_fio_json(path), str(path)):
            name = r["jobname"]
            if series is not None:
                r["series"] = series
            elif rx is not None:
                m = rx.search(name)
                if m is None:
                    raise XbqError(f"{path}: job '{name}' does not match --series-pattern "
                                   f"{series_pattern!r}")
                r["series"] = m.groupdict().get("series") or (m.group(1) if m.groups()
                                                              else m.group(0))
            else:
                r["series"] = re.sub(r"[-_]?jobs?\d+$", "", name) or name
            r["file"] = str(path)
            rows.append(r)
    df = pd.DataFrame(rows)
    first = ["series", "jobs", "iops", "iodepth", "read_iops", "write_iops", "mbps",
             "lat_mean_us", "lat_p50_us", "lat_p99_us", "lat_p999_us"]
    df = df[first + [c for c in df.columns if c not in first]]
    return df.sort_values(["series", "jobs"], kind="stable").reset_index(drop=True)


# --- writing xbq's results as fio JSON ------------------------------------------------------


def _direction(iops: float, share_bytes: float, runtime_ms: float, row: dict) -> dict:
    ios = int(round(iops * runtime_ms / 1e3))
    pct = {key: float(row.get(f"lat_{suffix}_us", float("nan"))) * 1e3
           for key, suffix in PERCENTILES.items()}
    pct = {k: (None if not math.isfinite(v) else v) for k, v in pct.items()}
    mean_ns = float(row.get("lat_mean_us", float("nan"))) * 1e3
    return {"io_bytes": int(share_bytes * runtime_ms / 1e3),
            "io_kbytes": int(share_bytes * runtime_ms / 1e3 / 1024),
            "bw_bytes": int(share_bytes), "bw": int(share_bytes / 1024), "iops": iops,
            "runtime": int(round(runtime_ms)), "total_ios": ios, "short_ios": 0,
            "drop_ios": 0,
            "clat_ns": {"mean": mean_ns if math.isfinite(mean_ns) else None, "N": ios,
                        "percentile": pct},
            "lat_ns": {"mean": mean_ns if math.isfinite(mean_ns) else None, "N": ios}}


def to_fio_json(frame: pd.DataFrame, *, bssplit: str = IOMETER_BSSPLIT,
                rwmixread: float = IOMETER_RWMIXREAD) -> str:
    """Rows of either engine as fio's JSON (one job section per row, group-reported).

    Bytes per direction are the row's ``mbps`` split in proportion to its read and write
    IOPS (both directions draw their sizes from the same ``bssplit``); latencies are of reads
    and writes together (the engines keep one histogram), so both directions carry them.
    ``xbq fio import`` reads the result back to the same ``iops``.
    """
    need = ("engine", "mode", "jobs", "iodepth", "iops", "read_iops", "write_iops", "mbps",
            "duration_s")
    missing = [c for c in need if c not in frame]
    if missing:
        raise XbqError(f"rows lack column(s) {', '.join(missing)}")
    jobs = []
    for k, row in enumerate(frame.to_dict(orient="records")):
        runtime_ms = float(row["duration_s"]) * 1e3
        total = float(row["iops"])
        bps = float(row["mbps"]) * 1e6
        rshare = float(row["read_iops"]) / total if total > 0 else 0.0
        opts = {"numjobs": str(int(row["jobs"])), "iodepth": str(int(row["iodepth"])),
                "xbq_engine": str(row["engine"]), "xbq_mode": str(row["mode"])}
        for extra in ("queues", "vcpus", "lock", "device", "seed", "rep"):
            if extra in row and row[extra] == row[extra]:
                opts[f"xbq_{extra}"] = str(row[extra])
        jobs.append({
            "jobname": f"xbq-{row['engine']}-{row['mode']}-jobs{int(row['jobs'])}",
            "groupid": k, "error": 0, "job options": opts,
            "read": _direction(float(row["read_iops"]), bps * rshare, runtime_ms, row),
            "write": _direction(float(row["write_iops"]), bps * (1 - rshare), runtime_ms,
                                row),
            "job_runtime": int(round(runtime_ms))})
    now = int(time.time())
    out = {"fio version": f"xbq-{__version__}", "timestamp": now,
           "timestamp_ms": now * 1000, "time": time.ctime(now),
           "global options": {"rw": "randrw", "bssplit": bssplit,
                              "rwmixread": f"{rwmixread:g}", "ioengine": "xbq"},
           "jobs": jobs}
    return json.dumps(out, indent=2)
