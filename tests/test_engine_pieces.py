"""The pieces both engines share: random streams, workloads, histograms, the results store."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from xbq.blkif.blk_mq import blk_rq_nr_pieces, blk_rq_piece
from xbq.engines.schema import COLUMNS, to_frame, to_json_rows
from xbq.errors import XbqError
from xbq.study.results import ResultsStore
from xbq.workload.fio import (
    IOMETER_BSSPLIT,
    mean_request_sectors,
    new_workload,
    next_io,
    parse_bssplit,
)
from xbq.workload.hist import (
    NR_BUCKETS,
    hist_bucket,
    hist_mean,
    hist_quantiles,
    hist_record,
    new_hist,
)
from xbq.workload.rng import new_streams, rng_below, rng_exponential, rng_next, rng_uniform


def test_xoshiro_reference_output():
    """xoshiro256** from state (1, 2, 3, 4): the reference implementation's first outputs."""
    s = np.array([1, 2, 3, 4], np.uint64)
    assert [int(rng_next(s)) for _ in range(3)] == [11520, 0, 1509978240]


def test_streams_reproducible_and_independent():
    a, b = new_streams(5, 3), new_streams(5, 3)
    np.testing.assert_array_equal(a, b)
    assert len({tuple(row) for row in a}) == 3
    x = [rng_uniform(a[0]) for _ in range(2000)]
    y = [rng_uniform(a[1]) for _ in range(2000)]
    assert abs(np.corrcoef(x, y)[0, 1]) < 0.1


def test_distributions():
    s = new_streams(1, 1)[0]
    u = np.array([rng_uniform(s) for _ in range(20_000)])
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    k = np.array([rng_below(s, 6) for _ in range(30_000)])
    assert k.min() == 0 and k.max() == 5
    assert stats.chisquare(np.bincount(k)).pvalue > 1e-3
    e = np.array([rng_exponential(s, 3.0) for _ in range(20_000)])
    assert stats.kstest(e, "expon", args=(0, 3.0)).pvalue > 1e-3


def test_bssplit_parsing():
    sizes, pcts = parse_bssplit(IOMETER_BSSPLIT)
    assert sizes.tolist() == [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]
    assert pcts.sum() == 100
    for bad in ("4k", "4k/50", "700/100", "4x/100", "4k/-1:8k/101", "0/100", "4k/abc"):
        with pytest.raises(XbqError):
            parse_bssplit(bad)


def test_iometer_draws_match_the_split():
    wl = new_workload(dev_sectors=1 << 20)
    s = new_streams(3, 1)[0]
    draws = np.array([next_io(wl[0], s) for _ in range(40_000)], dtype=np.int64)
    writes, sectors, nsect = draws[:, 0], draws[:, 1], draws[:, 2]
    assert abs(1 - writes.mean() - 0.80) < 0.01
    shares = {int(n): (nsect == n).mean() for n in np.unique(nsect)}
    assert abs(shares[8] - 0.60) < 0.01 and abs(shares[128] - 0.10) < 0.01
    assert (sectors >= 0).all() and (sectors + nsect <= 1 << 20).all()
    assert abs(nsect.mean() - mean_request_sectors(wl)) < 0.5


def test_blk_rq_pieces_cover_the_request_in_max_sectors_chunks():
    assert blk_rq_nr_pieces(128, 88) == 2 and blk_rq_nr_pieces(88, 88) == 1
    assert [blk_rq_piece(200, 88, p) for p in range(3)] == [(0, 88), (88, 88), (176, 24)]


def test_histogram_quantiles_within_bucket_error():
    h = new_hist(1)[0]
    x = np.random.default_rng(0).lognormal(10, 1, 50_000).astype(np.int64)
    for v in x:
        hist_record(h, v)
    for q, got in zip((0.5, 0.99, 0.999), hist_quantiles(h, (0.5, 0.99, 0.999)), strict=True):
        assert abs(got / np.quantile(x, q) - 1) < 0.04
    assert abs(hist_mean(h) / x.mean() - 1) < 0.04
    assert hist_bucket(0) == 0 and hist_bucket(31) == 31 and hist_bucket(2**62) < NR_BUCKETS
    assert np.isnan(hist_quantiles(new_hist(1), (0.5,))[0])


def _row(**kw):
    """A row as an engine makes it: its configuration (jobs and mode here) and that
    configuration's key."""
    from xbq.engines.schema import config_json, key_of

    row = dict.fromkeys(COLUMNS, 0)
    row.update(engine="native", mode="sq", jobs=1)
    row.update(kw)
    text = config_json({"engine": "native", "mode": row["mode"], "jobs": row["jobs"]})
    row.update(config=text, point_key=key_of(text))
    return row


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_store_appends_and_resumes(tmp_path, suffix):
    path = tmp_path / f"r{suffix}"
    with ResultsStore(path, {"command": "test"}) as store:
        store.append([_row(jobs=1, iops=10.0)])
        store.append([_row(jobs=4, iops=40.0, extra=1.5)])
    meta = json.loads((tmp_path / f"r{suffix}.meta.json").read_text())
    assert meta["command"] == "test" and meta["machine"]["logical_cpus"] >= 1
    assert meta["xbq_store"] == {"kind": "results", "version": 2}
    with ResultsStore(path) as again:  # resume is the default: nothing is deleted
        assert again.done() == {_row(jobs=1)["point_key"], _row(jobs=4)["point_key"]}
        assert again.frame["iops"].tolist() == [10.0, 40.0]
        assert len(json.loads(again.sidecar.read_text())["runs"]) == 2
    with pytest.raises(XbqError, match="--overwrite"):
        ResultsStore(path, existing="refuse")
    with ResultsStore(path, existing="overwrite") as fresh:
        assert fresh.done() == set() and path.exists()  # replaced by the first new row
        fresh.append([_row(jobs=8, iops=80.0)])
    with ResultsStore(path) as again:
        assert again.frame["jobs"].tolist() == [8]


def test_store_skips_stored_point_keys_and_widens_the_header(tmp_path):
    path = tmp_path / "r.csv"
    a, b = _row(jobs=1), _row(jobs=2, new_col=3.5)  # b: a column the file lacks
    with ResultsStore(path) as store:
        store.append([a])
        store.append([b])
    with ResultsStore(path) as again:
        assert again.done() == {a["point_key"], b["point_key"]}
        assert again.frame["new_col"].tolist()[1] == 3.5  # rewritten with the wider header
        assert [r["jobs"] for r in again.rows({b["point_key"]})] == [2]
    assert path.read_text().splitlines()[0].endswith(",config,point_key")


def test_store_drops_a_torn_last_line(tmp_path, capsys):
    path = tmp_path / "r.csv"
    a, b = _row(jobs=1), _row(jobs=2)
    with ResultsStore(path) as store:
        store.append([a, b])
    data = path.read_bytes()
    path.write_bytes(data[:-7])  # kill -9 in the middle of the second line
    with ResultsStore(path) as again:
        assert again.done() == {a["point_key"]} and "torn last line" in capsys.readouterr().err
        again.append([b])
    with ResultsStore(path) as again:
        assert again.done() == {a["point_key"], b["point_key"]}


def test_point_key_is_stable_and_sensitive():
    from xbq.engines.schema import point_key

    a = point_key({"jobs": 1, "mode": "sq", "params": {"x": 1.0}})
    assert a == point_key({"params": {"x": 1.0}, "mode": "sq", "jobs": 1})
    assert a != point_key({"jobs": 1, "mode": "sq", "params": {"x": 1.5}})
    assert len(a) == 16


def test_store_errors(tmp_path):
    with pytest.raises(XbqError, match="must end in"):
        ResultsStore(tmp_path / "r.txt")
    with pytest.raises(XbqError, match="does not exist"):
        ResultsStore(tmp_path / "missing" / "r.csv")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(XbqError, match="cannot resume"):
        ResultsStore(tmp_path / "bad.parquet")
    with pytest.raises(XbqError, match="lacks column"):  # a row without its key
        to_frame([{k: v for k, v in _row().items() if k != "point_key"}])
    assert (tmp_path / "bad.parquet").read_text() == "not parquet"  # left as it was
    with pytest.raises(XbqError, match="lacks column"):
        to_frame([{"engine": "native"}])


def test_json_rows():
    frame = to_frame([_row(iops=float("nan"))])
    rows = json.loads(to_json_rows(frame))
    assert rows[0]["iops"] is None and list(rows[0])[: len(COLUMNS)] == list(COLUMNS)
    assert isinstance(frame, pd.DataFrame)


def test_a_restored_pair_is_the_connected_one_in_every_array_a_run_reads():
    """After a twin run on a pair and ``restore()``, every array the drivers read equals the
    pair as connected: the records whole; the grant table, its active entries and the
    persistent grants in every entry; blkback's pending slots but their segment lists
    (written before read); the shared rings. What may differ is written before it is read:
    the grant pool's pages and the segment lists."""
    from xbq.engines.des.params import load_params
    from xbq.engines.des.point import DesPoint
    from xbq.engines.des.simulate import _pair, _run
    from xbq.study.paths import data_dir
    from xbq.workload.placement import job_placement

    pt = DesPoint(mode="mq", jobs=16, queues=4, vcpus=4, duration_s=0.002,
                  params=load_params(data_dir() / "calibrated" / "des-params.json"))
    pair = _pair(pt)
    pair.save()
    b = pair.back
    full = [a.copy() for a in pair._records()] + [b.gnt.copy(), b.active.copy(),
                                                  b.pgnt.copy()]
    rings = [pair.front.sring(r).copy() for r in range(pair.conn.nr_rings)]
    pending = b.pending[pair._pending_fields()].copy()
    _run(pt, pair, job_placement(16, 4, 1, True), 0, None, True)
    assert not np.array_equal(b.pgnt, full[-1])  # the run changed them ...
    pair.restore()
    for a, want in zip(pair._records() + [b.gnt, b.active, b.pgnt], full, strict=True):
        for name in a.dtype.names or [None]:  # ... field by field back (not the padding)
            assert np.array_equal(a if name is None else a[name],
                                  want if name is None else want[name]), name
    for r, want in enumerate(rings):
        assert np.array_equal(pair.front.sring(r), want)
    assert np.array_equal(b.pending[pair._pending_fields()], pending)
