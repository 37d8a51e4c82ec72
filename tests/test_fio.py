"""fio in and out, against real fio: the job file parses and runs, imported IOPS equal fio's own
figures (its terse output of the same run), bad files get one line, xbq's fio JSON reads back.

The tests that run fio skip when it is not installed, except under ``XBQ_REQUIRE_FIO=1``
(``.ci/run`` installs fio and sets it), where a missing fio fails them.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from xbq.cli import main
from xbq.errors import XbqError
from xbq.study.fio import import_fio, job_file, read_fio_json, to_fio_json

FIO = shutil.which("fio")


@pytest.fixture
def fio():
    if FIO is None:
        if os.environ.get("XBQ_REQUIRE_FIO"):
            pytest.fail("fio is required here (XBQ_REQUIRE_FIO=1) but not on PATH")
        pytest.skip("fio is not installed")
    return FIO


def fio_version():
    return subprocess.run([FIO, "--version"], capture_output=True, text=True).stdout.strip()


def _run(fio, tmp_path, jobs, group_reporting, fmt):
    """Run the IOmeter job on fio's null engine (0.3 s a section); return (json file, the
    terse lines fio printed for the same run)."""
    job = tmp_path / "job.fio"
    job.write_text(job_file(jobs, iodepth=8, filename=str(tmp_path / "unused"),
                            runtime_s=0.3, ramp_s=0, size="64m", ioengine="null",
                            group_reporting=group_reporting))
    out = subprocess.run([fio, f"--output-format=terse,{fmt}", str(job)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = tmp_path / f"result-{fmt}-{int(group_reporting)}.json"
    result.write_text(out.stdout)  # the terse lines first: the reader must skip them
    terse = [ln.split(";") for ln in out.stdout.splitlines() if ln.startswith("3;fio-")]
    return result, terse


def test_the_job_file_parses_in_fio(fio, tmp_path):
    path = tmp_path / "iometer.fio"
    path.write_text(job_file())
    out = subprocess.run([fio, "--parse-only", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    text = path.read_text()
    for j in (1, 4, 8, 16, 32, 64):
        assert f"[iometer-jobs{j}]\nstonewall\nnumjobs={j}" in text
    for opt in ("bssplit=512/10:1k/5:2k/5:4k/60:8k/2:16k/4:32k/4:64k/10", "rw=randrw",
                "rwmixread=80", "direct=1", "ioengine=libaio", "iodepth=64", "time_based=1",
                "group_reporting=1"):
        assert opt in text


@pytest.mark.parametrize("fmt", ["json", "json+"])
@pytest.mark.parametrize("group_reporting", [True, False], ids=["group", "per-job"])
def test_imported_iops_equal_fios_own_figures(fio, tmp_path, fmt, group_reporting):
    jobs = [1, 2, 3]
    result, terse = _run(fio, tmp_path, jobs, group_reporting, fmt)
    df = import_fio(result, series="null")
    assert df["jobs"].tolist() == jobs and (df["series"] == "null").all()
    assert df["fio_version"].iloc[0] == fio_version()
    for row in df.itertuples():
        lines = [f for f in terse if f[2] == row.jobname]
        assert len(lines) == (1 if group_reporting else row.jobs) == row.fio_entries
        # terse fields 7 and 48: read and write IOPS, truncated to integers
        want = sum(int(f[7]) + int(f[48]) for f in lines)
        assert abs(row.iops - want) <= 2 * len(lines), (row.jobname, row.iops, want)
        assert abs(row.read_iops - sum(int(f[7]) for f in lines)) <= len(lines)
        assert row.iops > 1000 and row.iodepth == 8 and row.errors == 0
        assert 0.2 < row.runtime_s < 1.0
        assert row.lat_mean_us > 0
        merged = fmt == "json+"  # bins: reads and writes together, clones merged
        assert pd.notna(row.lat_p99_us) == merged
        assert pd.notna(row.read_clat_p50_us) == (merged or row.fio_entries == 1)
    if fmt == "json+":
        assert (df["lat_p50_us"] <= df["lat_p99_us"]).all()
        assert (df["lat_p99_us"] <= df["lat_p999_us"]).all()


def test_cli_imports_many_files_by_pattern(fio, tmp_path, capsys):
    a, _ = _run(fio, tmp_path, [1, 2], True, "json")
    (tmp_path / "b").mkdir()
    b, _ = _run(fio, tmp_path / "b", [4], True, "json")
    out = tmp_path / "t.csv"
    assert main(["fio", "import", str(a), str(b), "--series-pattern", r"^(?P<series>\w+)-jobs",
                 "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert df["jobs"].tolist() == [1, 2, 4] and set(df["series"]) == {"iometer"}
    assert main(["fit", str(out), "--model", "amdahl", "--bootstrap", "0", "--json"]) == 0


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, match", [
    ('{"fio version": "fio-3.33", "jobs": [{"jobname": "a", "read": {"iops": 1', "truncated"),
    ('{"fio version": "fio-3.33", "jobs": [}', "malformed"),
    ("3;fio-3.33;a;0;0;1;2;3;4\n", "terse format"),
    ('{"fio version": "fio-3.33", "jobs": []}', "jobs must hold at least 1 item"),
    ("nothing here\n", "holds no fio JSON"),
    ('{"jobs": [{"jobname": "a", "read": {"iops": "x"}, "write": {"iops": 1}}]}',
     "jobs[0].read.iops must be a number, not 'x'"),
    ('{"jobs": [{"jobname": "a", "write": {"iops": 1}}]}', "jobs[0].read is missing"),
    ('{"jobs": [{"jobname": "a", "job options": {"numjobs": "two"}, "read": {"iops": 1},'
     ' "write": {"iops": 1}}]}', "numjobs='two' is not a whole number"),
])
def test_bad_files_get_one_line(tmp_path, cli, text, match):
    path = _write(tmp_path, "r.json", text)
    with pytest.raises(XbqError, match=re.escape(match)) as err:
        import_fio(path)
    assert "\n" not in str(err.value)
    cli("fio", "import", path).one_line_error(match)


def test_missing_file_and_bad_pattern(tmp_path):
    with pytest.raises(XbqError, match="cannot read"):
        read_fio_json(tmp_path / "nope.json")
    good = _write(tmp_path, "r.json", json.dumps(
        {"jobs": [{"jobname": "x", "read": {"iops": 5}, "write": {"iops": 5}}]}))
    with pytest.raises(XbqError, match="does not match"):
        import_fio(good, series_pattern="^mq")
    with pytest.raises(XbqError, match="bad --series-pattern"):
        import_fio(good, series_pattern="(")
    assert import_fio(good)["iops"].tolist() == [10.0]


def test_job_cli_writes_a_file(tmp_path):
    out = tmp_path / "j.fio"
    assert main(["fio", "job", "--jobs", "1,4", "--iodepth", "32", "--out", str(out)]) == 0
    text = out.read_text()
    assert "iodepth=32" in text and "[iometer-jobs4]" in text and "[iometer-jobs8]" not in text
    assert main(["fio", "job", "--name", "bad name"]) == 1


def test_xbq_rows_as_fio_json_read_back(tmp_path):
    from xbq.engines.des.simulate import simulate

    df = simulate("mq", [1, 4], queues=2, vcpus=4, iodepth=8, duration=0.002)
    path = _write(tmp_path, "x.json", to_fio_json(df))
    back = import_fio(path, series_pattern=r"xbq-des-(?P<series>\w+)-jobs")
    assert back["jobs"].tolist() == [1, 4] and set(back["series"]) == {"mq"}
    for a, b in zip(df.itertuples(), back.itertuples(), strict=True):
        assert b.iops == pytest.approx(a.iops, rel=1e-12)
        assert b.read_iops == pytest.approx(a.read_iops, rel=1e-12)
        assert b.mbps == pytest.approx(a.mbps, rel=1e-3)
        assert b.read_clat_p99_us == pytest.approx(a.lat_p99_us, rel=1e-12)


def test_measure_and_simulate_print_fio_json():
    for argv in (["simulate", "--mode", "sq", "--jobs", "2", "--duration", "0.002",
                  "--output-format", "fio-json"],
                 ["measure", "--mode", "sq", "--jobs", "1", "--vcpus", "1", "--duration", "0.1",
                  "--warmup", "0", "--output-format", "fio-json"]):
        out = subprocess.run([sys.executable, "-m", "xbq", *argv], capture_output=True,
                             text=True, timeout=600, cwd=Path(__file__).resolve().parents[1])
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        job = data["jobs"][0]
        assert data["fio version"].startswith("xbq-") and job["job options"]["numjobs"]
        assert job["read"]["iops"] + job["write"]["iops"] > 0
