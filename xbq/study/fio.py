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
from xbq.checks import read_regular
from xbq.errors import XbqError
from xbq.study.fio_schema import FioJob, FioResult, parse_fio
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

#: Largest fio result file read (bytes): json+ of many clones is tens of MB.
MAX_FIO_BYTES = 256 << 20


def read_fio_json(path) -> FioResult:
    """Read one fio JSON (or JSON+) result file, checked whole by :class:`FioResult`.

    The result is found wherever fio put it among other output: a line that opens a JSON
    object and parses to a fio result (``--output-format=normal,json`` writes the normal
    report around it, ``terse,json`` the terse lines before it). A regular file only, of at
    most :data:`MAX_FIO_BYTES`. Raises a one-line :class:`XbqError` for a missing or special
    file, fio's terse format alone, malformed or truncated JSON, numbers of thousands of
    digits, nesting too deep, a top-level array, two results in one file, and any field of
    the wrong type or out of range (named).
    """
    p = Path(path)
    text = read_regular(p, limit=MAX_FIO_BYTES).decode("utf-8", errors="replace")
    starts = [m.start() for m in re.finditer(r"^[ \t]*[{\[]", text, flags=re.M)]
    if not starts:
        if re.match(r"\s*\d+;fio-", text):
            raise XbqError(f"{p} is fio's terse format; rerun fio with "
                           "--output-format=json (or json+)")
        raise XbqError(f"{p} holds no fio JSON (run fio with --output-format=json)")
    found, first_error = [], None
    decoder = json.JSONDecoder()
    pos = 0
    for start in starts:
        if start < pos:
            continue  # inside a document already read
        body = text[start:].lstrip(" \t")
        try:
            data, end = decoder.raw_decode(body)
        except json.JSONDecodeError as exc:
            if first_error is None:
                what = "truncated" if exc.pos >= len(body.rstrip()) else "malformed"
                first_error = (f"{p}: {what} JSON at line {exc.lineno} column {exc.colno} "
                               f"({exc.msg})")
            continue
        except RecursionError:
            raise XbqError(f"{p}: not valid JSON: nested too deeply") from None
        except ValueError:  # an integer of more digits than Python converts (4300)
            raise XbqError(f"{p}: not valid JSON: a number of thousands of digits") from None
        found.append(data)
        pos = start + (len(text[start:]) - len(body)) + end
    if not found:
        raise XbqError(first_error)
    if len(found) > 1:
        raise XbqError(f"{p} holds {len(found)} JSON documents; give one fio result per file")
    return parse_fio(found[0], str(p))


def _whole(raw: str, key: str, where: str, lo: int = 1) -> int:
    """A fio option that counts (``numjobs``, ``iodepth``): a whole decimal number."""
    if not re.fullmatch(r"\d{1,9}", raw.strip()):
        raise XbqError(f"{where}: {key}={raw!r} is not a whole number")
    v = int(raw)
    if v < lo:
        raise XbqError(f"{where}: {key} must be >= {lo}, not {v}")
    return v


def _option(job: FioJob, glob: dict, key: str, default: str) -> str:
    return job.job_options.get(key, glob.get(key, default))


def _quantile_from_bins(bins: dict, q: float) -> float:
    """The ``q`` quantile (0-1) of a merged fio latency histogram (ns -> count), in ns."""
    if not bins:
        return float("nan")
    keys = np.array(sorted(bins), dtype=np.float64)
    counts = np.array([bins[int(k)] for k in keys], dtype=np.float64)
    cum = np.cumsum(counts)
    return float(keys[np.searchsorted(cum, q * cum[-1], side="left")])


def _group(entries: list[FioJob], glob: dict, where: str) -> dict:
    """One row from the entries of one job section (one with group_reporting, ``numjobs``
    clones without it)."""
    first = entries[0]
    name = first.jobname
    here = f"{where}: job '{name}'"
    row = {"jobname": name, "groupid": first.groupid,
           "jobs": _whole(_option(first, glob, "numjobs", "1"), "numjobs", here),
           "iodepth": _whole(_option(first, glob, "iodepth", "1"), "iodepth", here),
           "fio_entries": len(entries)}
    if len(entries) not in (1, row["jobs"]):
        raise XbqError(f"{here} has {len(entries)} entries in group {first.groupid} but "
                       f"numjobs={row['jobs']}: two sections of one name, or a clone missing "
                       "(give each section its own name)")
    for opt in ("rw", "bs", "bssplit", "rwmixread", "ioengine", "filename"):
        row[opt] = _option(first, glob, opt, "")
    total_iops = 0.0
    merged_bins: dict = {}
    have_bins = True
    lat_sum = lat_n = 0.0
    for d in ("read", "write"):
        secs = [getattr(e, d) for e in entries]
        iops = sum(sec.iops for sec in secs)
        bws = [sec.bw_bytes if sec.bw_bytes is not None else
               (1024 * sec.bw if sec.bw is not None else None) for sec in secs]
        bw = float("nan") if any(b is None for b in bws) else float(sum(bws))
        d_sum = d_n = 0.0
        d_bins: dict = {}
        for sec in secs:
            clat = sec.clat_ns
            if clat is None or clat.bins is None:
                have_bins = False
            else:
                for k, v in clat.bins.items():
                    d_bins[int(k)] = d_bins.get(int(k), 0) + v
            if clat is not None:
                d_n += clat.N
                d_sum += clat.N * clat.mean
        row[f"{d}_iops"] = iops
        row[f"{d}_bw_bytes"] = bw
        row[f"{d}_ios"] = float(sum(sec.total_ios for sec in secs))
        row[f"{d}_clat_mean_us"] = d_sum / d_n / 1e3 if d_n else float("nan")
        pct = (secs[0].clat_ns.percentile or {}) if secs[0].clat_ns is not None else {}
        for key, suffix in PERCENTILES.items():
            if len(entries) == 1 and key in pct:  # fio's own figure
                row[f"{d}_clat_{suffix}_us"] = pct[key] / 1e3
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
    runtimes = [e.job_runtime if e.job_runtime is not None else e.read.runtime
                for e in entries]
    row["runtime_s"] = max(runtimes) / 1e3
    row["errors"] = sum(abs(e.error) > 0 for e in entries)
    return row


def fio_rows(result: FioResult, where: str = "fio result") -> list[dict]:
    """The rows of one checked fio result: one per job section (``jobname``, ``groupid``),
    clones of a ``numjobs`` job without ``group_reporting`` summed."""
    groups: dict = {}
    for job in result.jobs:
        groups.setdefault((job.jobname, job.groupid), []).append(job)
    rows = [_group(entries, result.global_options, where) for entries in groups.values()]
    for r in rows:
        r["fio_version"] = result.fio_version
        r["timestamp"] = result.timestamp
    return rows


def import_fio(paths, *, series: str | None = None, series_pattern: str | None = None,
               vcpus: int | None = None, queues: int | None = None) -> pd.DataFrame:
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
    vcpus, queues : int, optional
        The guest's vCPUs and the rings its disk negotiated, recorded as columns ``vcpus``
        and ``queues`` of every row (the models' contender cap and xen-blk's rings read
        them; fio's JSON does not hold them).

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
    from xbq.checks import check_int

    settings = {k: check_int(k, v, 1, 4096) for k, v in (("vcpus", vcpus), ("queues", queues))
                if v is not None}
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
            rows.append({**r, **settings})
    df = pd.DataFrame(rows)
    first = ["series", "jobs", "iops", *settings, "iodepth", "read_iops", "write_iops",
             "mbps", "lat_mean_us", "lat_p50_us", "lat_p99_us", "lat_p999_us"]
    df = df[first + [c for c in df.columns if c not in first]]
    return df.sort_values(["series", "jobs"], kind="stable").reset_index(drop=True)


# --- writing xbq's results as fio JSON ------------------------------------------------------


def _direction(iops: float, share_bytes: float, runtime_ms: float, row: dict) -> dict:
    """One direction in fio's shape; a latency the engine did not measure is left out (fio
    never writes null), so ``xbq fio import`` reads the section back."""
    ios = int(round(iops * runtime_ms / 1e3))
    pct = {key: float(row.get(f"lat_{suffix}_us", float("nan"))) * 1e3
           for key, suffix in PERCENTILES.items()}
    clat = {"N": ios, "percentile": {k: v for k, v in pct.items() if math.isfinite(v)}}
    mean_ns = float(row.get("lat_mean_us", float("nan"))) * 1e3
    if math.isfinite(mean_ns):
        clat["mean"] = mean_ns
    return {"io_bytes": int(share_bytes * runtime_ms / 1e3),
            "io_kbytes": int(share_bytes * runtime_ms / 1e3 / 1024),
            "bw_bytes": int(share_bytes), "bw": int(share_bytes / 1024), "iops": iops,
            "runtime": int(round(runtime_ms)), "total_ios": ios, "short_ios": 0,
            "drop_ios": 0, "clat_ns": clat, "lat_ns": dict(clat)}


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
