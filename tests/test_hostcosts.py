"""The host microbenchmarks (``xbq.study.hostcosts``) and the twin-vs-native comparison
(``xbq.study.twin_native``), at tiny sizes: positive, finite medians with spreads; refusals
of bad arguments; a parameter file that round-trips through DesParams and ``xbq
simulate``; the matching of native configurations to twin points."""

import json
import math

import pandas as pd
import pytest

from xbq.engines.des.params import FIELDS, DesParams, load_params
from xbq.errors import XbqError
from xbq.study import hostcosts as hc
from xbq.study import twin_native as tn

STATS = ("median", "q1", "q3", "min", "max")


def _check_spread(s, *, positive=True):
    assert all(math.isfinite(s[k]) for k in STATS), s
    assert s["min"] <= s["q1"] <= s["median"] <= s["q3"] <= s["max"], s
    assert s["n"] >= 1 and s["unit"] == "ns"
    if positive:
        assert s["median"] > 0, s


@pytest.fixture(scope="module")
def micro():
    """Every benchmark once, at tiny sizes (a few hundred samples each)."""
    return hc.microbench(0.002)


@pytest.mark.threads
def test_microbench_tiny_gives_positive_medians_with_spreads(micro):
    for name in ("submit_outside", "submit_cs", "submit_locked", "backend_dispatch",
                 "backend_done", "backend_inline", "irq", "complete"):
        _check_spread(micro[name]["slope"])
        _check_spread(micro[name]["per_op"])
        _check_spread(micro[name]["intercept"], positive=False)  # a line's intercept
    for name in ("lock_uncontended", "evtchn_entry", "handoff_ticket", "handoff_mcs",
                 "evtchn_latency", "wake", "kick", "ctx_switch", "poll"):
        _check_spread(micro[name])
    _check_spread(micro["evtchn_send"], positive=False)  # a difference of two loops
    assert set(micro["wall_s"]) == set(hc.BENCHES)


def test_spread_refuses_nothing_finite():
    with pytest.raises(XbqError, match="no finite"):
        hc.spread([math.nan, math.inf])
    s = hc.spread([3.0, 1.0, 2.0, math.nan])
    assert (s["min"], s["median"], s["max"], s["n"]) == (1.0, 2.0, 3.0, 3)


@pytest.mark.parametrize("call, needle", [
    (lambda: hc.bench_pipeline(0), "sweeps"),
    (lambda: hc.bench_pipeline(2, batches=(1, 64)), "batch size"),
    (lambda: hc.bench_pipeline(2, batches=(4, 4)), "two different batch sizes"),
    (lambda: hc.bench_pipeline(2, warm=-1), "warm"),
    (lambda: hc.bench_lock(reps=0), "reps"),
    (lambda: hc.bench_lock(ops="10"), "ops"),
    (lambda: hc.bench_evtchn(ops=1.5), "ops"),
    (lambda: hc.bench_handoff(0), "samples"),
    (lambda: hc.bench_evtchn_latency(True), "samples"),
    (lambda: hc.bench_wake(0), "samples"),
    (lambda: hc.bench_wake(5, delay_us=-1), "delay_us"),
    (lambda: hc.bench_wake(5, delay_us=float("nan")), "delay_us"),
    (lambda: hc.bench_ctx_switch(chunks=0), "chunks"),
    (lambda: hc.microbench(0), "scale"),
    (lambda: hc.microbench(float("inf")), "scale"),
    (lambda: hc.microbench(1, benches=("pipeline", "nope")), "nope"),
    (lambda: hc.host_params({}), "microbench lacks"),
])
def test_bad_arguments_are_refused(call, needle):
    with pytest.raises(XbqError, match=needle):
        call()


@pytest.mark.threads
def test_param_file_round_trips(micro, tmp_path, cli):
    doc = hc.host_cost_file(micro, pcpus=2)
    assert set(doc) == {"params", "sources", "microbench", "provenance"}
    assert list(doc["params"]) == list(FIELDS) and list(doc["sources"]) == list(FIELDS)
    assert all(s.split(":")[0] in ("measured", "native", "default")
               for s in doc["sources"].values())
    assert doc["sources"]["fe_cs_ns"].startswith("measured: submit_cs slope")
    assert doc["sources"]["quantum_ns"].startswith("default:")
    assert doc["params"]["pcpus"] == 2 and doc["params"]["tag_wait"] is True
    path = tmp_path / "host.json"
    hc.write_cost_file(doc, path)
    back = load_params(path)
    assert back == DesParams(**doc["params"])
    assert back.fe_cs_ns == pytest.approx(micro["submit_cs"]["slope"]["median"]) or \
        "clipped" in doc["sources"]["fe_cs_ns"]
    assert json.loads(path.read_text())["microbench"]["wake"]["median"] > 0
    mine = hc.host_params(micro)[0]
    import os

    assert mine.pcpus == len(os.sched_getaffinity(0))
    res = cli("simulate", "--params", path, "--mode", "mq", "--jobs", "1", "--duration",
              "0.01", "--queues", "2", "--vcpus", "2", "--iodepth", "8", "--json")
    assert res.rc == 0, res.err
    row = json.loads(res.out)[0]
    assert row["iops"] > 0 and row["lost"] == 0


@pytest.mark.threads
def test_cli_writes_the_file(tmp_path, capsys):
    out = tmp_path / "h.json"
    assert hc.main(["--out", str(out), "--scale", "0.001", "--pcpus", "3"]) == 0
    doc = json.loads(out.read_text())
    assert doc["params"]["pcpus"] == 3 and doc["provenance"]["scale"] == 0.001
    assert "submit_ns" in capsys.readouterr().out
    assert hc.main(["--out", str(tmp_path / "no" / "h.json"), "--scale", "0.001"]) == 1
    assert "no such folder" in capsys.readouterr().err


# --- twin_native: matching native configurations to twin points ---------------------------------


def _row(mode, jobs, rep, iops, *, lock="ticket", vcpus=16, queues=16, host_cpus=2,
         dom0=16, device="null"):
    conf = {"backend_max_queues": 16, "bssplit": "4k/100", "dev_sectors": None,
            "device": device, "dom0_vcpus": dom0, "duration_s": 1.0, "engine": "native",
            "iodepth": 32, "job_placement": False, "jobs": jobs, "lock": lock, "mode": mode,
            "queues": queues, "rep": rep, "ring_page_order": 0, "rwmixread": 70.0, "seed": 0,
            "spin": 200, "vcpus": vcpus, "warmup_s": 0.3}
    rings = queues if mode == "mq" else 1
    return {"engine": "native", "mode": mode, "jobs": jobs, "queues": rings, "vcpus": vcpus,
            "iodepth": 32, "rep": rep, "iops": iops, "device": device, "lock": lock,
            "threads": vcpus + min(dom0, rings), "host_cpus": host_cpus,
            "config": json.dumps(conf, sort_keys=True), "point_key": f"k{mode}{jobs}{rep}"}


def _sweep(tmp_path, name, rows):
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_native_points_group_repetitions_and_read_the_config(tmp_path):
    a = _sweep(tmp_path, "ticket.csv", [
        _row("sq", 1, 0, 100.0), _row("sq", 1, 1, 300.0), _row("sq", 1, 2, 200.0),
        _row("mq", 4, 0, 50.0), _row("mq", 4, 1, 70.0)])
    b = _sweep(tmp_path, "pv.csv", [_row("sq", 1, 0, 10.0, lock="pv", dom0=4),
                                    _row("sq", 1, 1, 30.0, lock="pv", dom0=4)])
    rows = tn.load_measured([a, b])
    assert rows["device"].tolist() == ["null"] * 7  # "null" read as text, not as NA
    pts = tn.native_points(rows)
    assert len(pts) == 3
    sq = pts[(pts.source == "ticket") & (pts["mode"] == "sq")].iloc[0]
    assert (sq.reps, sq.iops_mean, sq.iops_min, sq.iops_max) == (3, 200.0, 100.0, 300.0)
    assert sq.iops_std == pytest.approx(100.0)
    assert (sq.queues, sq.dom0_vcpus, sq.host_cpus, sq.bssplit) == (16, 16, 2, "4k/100")
    mq = pts[pts["mode"] == "mq"].iloc[0]
    assert (mq.reps, mq.iops_mean, mq.jobs, mq.threads) == (2, 60.0, 4, 32)
    pv = pts[pts.source == "pv"].iloc[0]
    assert (pv.lock, pv.dom0_vcpus, pv.iops_mean) == ("pv", 4, 20.0)


def test_twin_points_match_the_native_configuration(tmp_path):
    rows = tn.load_measured([_sweep(tmp_path, "s.csv", [
        _row("sq", 8, 0, 1e5, vcpus=2, queues=2, host_cpus=3, dom0=5),
        _row("mq", 8, 0, 2e5, vcpus=2, queues=2, host_cpus=3, dom0=5),
        _row("mq", 8, 0, 2e5, vcpus=2, queues=2, host_cpus=3, dom0=5, lock="pv"),
        _row("mq", 8, 0, 2e5, vcpus=2, queues=2, lock="mcs", device="ramdisk")])])
    pts = tn.native_points(rows).to_dict("records")
    base = DesParams(pcpus=7, dom0_vcpus=16, lock_mcs=1, submit_ns=1234.0)
    sq, flags = tn.twin_point(pts[0], base, duration=0.01, seed=3)
    assert (sq.mode, sq.jobs, sq.rings, sq.vcpus, sq.iodepth, sq.seed) == ("mq1", 8, 1, 2,
                                                                           32, 3)
    assert (sq.bssplit, sq.rwmixread, sq.duration_s) == ("4k/100", 70.0, 0.01)
    p = sq.params
    assert (p.pcpus, p.dom0_vcpus, p.lock_mcs, p.submit_ns) == (3, 5, False, 1234.0)
    assert flags == []
    assert tn.twin_point(pts[0], base, sq_as="sq")[0].mode == "sq"
    mq, _ = tn.twin_point(pts[1], base)
    assert (mq.mode, mq.rings) == ("mq", 2)
    _, flags = tn.twin_point(pts[2], base)
    assert flags == ["twin has no pv lock (simulated with the ticket lock)"]
    mcs, flags = tn.twin_point(pts[3], base)
    assert mcs.params.lock_mcs is True and mcs.params.pcpus == 2
    assert flags == ["twin's device is null, the native one ramdisk"]
    with pytest.raises(XbqError, match="sq_as"):
        tn.twin_point(pts[0], base, sq_as="mq")
    with pytest.raises(XbqError, match="tolerance"):
        tn.compare(tn.native_points(rows), base, tolerance=0)
    with pytest.raises(XbqError, match="no native point"):
        tn.compare(tn.native_points(rows).iloc[:0], base)


def test_compare_simulates_each_twin_point_once_and_counts_hits(tmp_path):
    rows = tn.load_measured([_sweep(tmp_path, "t.csv", [
        _row("sq", 1, 0, 100.0), _row("sq", 1, 1, 120.0), _row("mq", 1, 0, 100.0)]),
        _sweep(tmp_path, "p.csv", [_row("sq", 1, 0, 200.0, lock="pv")])])
    seen = []

    def fake(pt):
        seen.append(pt.key)
        return {"iops": 115.0 if pt.mode == "mq1" else 200.0}

    table = tn.compare(tn.native_points(rows), DesParams(), simulate=fake)
    assert len(table) == 3 and len(seen) == 2  # the pv point is the ticket point's twin
    sq = table.iloc[0]
    assert (sq.config, sq.twin_mode, sq.twin_iops) == ("t sq", "mq1", 115.0)
    assert sq.rel_error == pytest.approx(115 / 110 - 1) and sq.within
    assert table.iloc[1].rel_error == pytest.approx(1.0) and not table.iloc[1].within
    assert table.iloc[2]["flag"].startswith("twin has no pv lock")
    s = tn.summarise(table)
    assert s["all"] == {**s["all"], "points": 3, "within": 1}
    assert s["unflagged"]["points"] == 2 and s["by_config"]["p sq"]["within"] == 0
    assert tn.text_table(table).splitlines()[1].startswith("t sq")


def test_load_measured_refuses_what_is_not_a_native_sweep(tmp_path):
    bad = tmp_path / "x.csv"
    bad.write_text("engine,iops\nnative,1\n")
    with pytest.raises(XbqError, match="not a native sweep"):
        tn.load_measured([bad])
    des = _sweep(tmp_path, "d.csv", [{**_row("sq", 1, 0, 1.0), "engine": "des"}])
    with pytest.raises(XbqError, match="not the native engine"):
        tn.load_measured([des])
    with pytest.raises(XbqError, match="no measured sweep"):
        tn.load_measured([])
    with pytest.raises(XbqError):
        tn.load_measured([tmp_path / "missing.csv"])


def test_twin_native_cli_end_to_end_tiny(micro, tmp_path, capsys):
    params = tmp_path / "host.json"
    hc.write_cost_file(hc.host_cost_file(micro, pcpus=2), params)
    sweep = _sweep(tmp_path, "s.csv", [_row("mq", 2, r, 1e5, vcpus=2, queues=2, dom0=2)
                                       for r in range(2)])
    stem = tmp_path / "cmp"
    assert tn.main(["--params", str(params), "--out", str(stem) + ".csv", "--measured",
                    str(sweep), "--duration", "0.005"]) == 0
    doc = json.loads((tmp_path / "cmp.json").read_text())
    assert doc["summary"]["all"]["points"] == 1 and doc["rows"][0]["twin_iops"] > 0
    assert pd.read_csv(tmp_path / "cmp.csv").loc[0, "pcpus"] == 2
    assert "within 15%" in capsys.readouterr().out
