"""The results store: one writer, one configuration, never lost, only regular files, keys as
strings, provenance that names this project's commit or none. One test per way a store lost
or mixed data before (issue 18), each against the real command line where it can be."""

import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from xbq.engines.des.point import DesPoint
from xbq.engines.des.simulate import simulate_point
from xbq.engines.schema import key_of
from xbq.study.results import ResultsStore, run_points

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--mode", "mq", "--queues", "2", "--vcpus", "2", "--iodepth", "4", "--duration",
        "0.002"]


def _rows(path) -> pd.DataFrame:
    path = Path(path)
    if path.suffix == ".csv":
        return pd.read_csv(path, dtype={"point_key": str, "config": str})
    return pd.read_parquet(path)


def _holder(path, seconds):
    """Another process holding ``path``'s store open (its lock) for ``seconds``."""
    code = (f"import time\nfrom xbq.study.results import ResultsStore\n"
            f"s = ResultsStore({str(path)!r}, {{'command': 'a test holder'}})\n"
            f"print('held', flush=True)\ntime.sleep({seconds})\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT)
    assert proc.stdout.readline().strip() == "held"
    return proc


# --- one writer -----------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_second_writer_is_told_who_holds_the_store(tmp_path, cli, suffix):
    out = tmp_path / f"same{suffix}"
    holder = _holder(out, 30)
    try:
        line = cli("simulate", *FAST, "--jobs", "5", "--out", out).one_line_error(
            "is being written by pid")
        assert str(holder.pid) in line and "a test holder" in line and "--wait" in line
        assert not out.exists()  # nothing run, nothing written
    finally:
        holder.kill()
        holder.wait()


def test_wait_blocks_until_the_holder_is_gone_then_resumes(tmp_path):
    out = tmp_path / "same.csv"
    holder = _holder(out, 2)
    argv = [sys.executable, "-m", "xbq", "simulate", *FAST, "--jobs", "1,2", "--out",
            str(out), "--wait", "--json"]
    t0 = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=ROOT)
    holder.wait()
    assert done.returncode == 0, done.stderr
    assert "waiting for pid" in done.stderr and time.monotonic() - t0 > 1.0
    assert sorted(_rows(out)["jobs"]) == [1, 2]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_two_processes_writing_one_store_lose_nothing(tmp_path, suffix):
    """The review's race: ``--jobs 1,2,3,4`` and ``--jobs 5,6,7,8`` into one file at once.
    With --wait the second waits for the first and then adds its points: all eight, once."""
    out = tmp_path / f"same{suffix}"
    procs = [subprocess.Popen([sys.executable, "-m", "xbq", "simulate", *FAST, "--duration",
                               "0.05", "--jobs", jobs, "--out", str(out), "--wait", "--json"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              cwd=ROOT)
             for jobs in ("1,2,3,4", "5,6,7,8")]
    for p in procs:
        assert p.wait(timeout=600) == 0, p.stderr.read()
    df = _rows(out)
    assert sorted(df["jobs"]) == list(range(1, 9)) and df["point_key"].is_unique


# --- never replaced, never through a symlink, only regular files ----------------------------------

def test_fio_import_never_replaces_a_results_store(tmp_path, cli):
    out = tmp_path / "results.csv"
    assert cli("simulate", *FAST, "--jobs", "1", "--out", out).rc == 0
    before = out.read_bytes()
    fio = tmp_path / "r.json"
    fio.write_text(json.dumps({"jobs": [{"jobname": "a", "read": {"iops": 5},
                                         "write": {"iops": 5}}]}))
    cli("fio", "import", fio, "--out", out).one_line_error("exists")
    cli("fio", "import", fio, "--out", out, "--overwrite").one_line_error("not replacing it")
    assert out.read_bytes() == before
    table = tmp_path / "t.csv"  # its own kind: replaced with --overwrite, refused without
    assert cli("fio", "import", fio, "--out", table).rc == 0
    cli("fio", "import", fio, "--out", table).one_line_error("--overwrite")
    assert cli("fio", "import", fio, "--out", table, "--overwrite").rc == 0
    cli("simulate", *FAST, "--jobs", "1", "--out", table, "--overwrite").one_line_error(
        "not replacing it")


def test_planted_symlinks_redirect_nothing(tmp_path, cli):
    """Symlinks at every name an old version used for its temporary files: their targets are
    untouched and the store stays a regular file."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    out = tmp_path / "out.csv"
    for name in ("out.csv.tmp", "out.csv.meta.json.tmp", ".out.csv.tmp"):
        (tmp_path / name).symlink_to(victim)
    assert cli("simulate", *FAST, "--jobs", "1", "--out", out).rc == 0
    assert cli("simulate", *FAST, "--jobs", "1,2", "--out", out).rc == 0  # a resume
    assert victim.read_text() == "precious\n"
    assert out.is_file() and not out.is_symlink()
    assert (tmp_path / "out.csv.meta.json").is_file()
    assert not (tmp_path / "out.csv.meta.json").is_symlink()


@pytest.mark.parametrize("name", ["out.csv", "out.csv.meta.json", "out.csv.lock"])
def test_a_symlink_at_the_store_its_sidecar_or_its_lock_is_refused(tmp_path, cli, name):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / name).symlink_to(victim)
    cli("simulate", *FAST, "--jobs", "1", "--out", tmp_path / "out.csv").one_line_error(
        "symbolic link")
    assert victim.read_text() == "precious\n"


@pytest.mark.parametrize("command", [["simulate", *FAST, "--jobs", "1"], ["fio", "import"]])
def test_out_naming_a_fifo_is_refused_at_once(tmp_path, command):
    fifo = tmp_path / "out.csv"
    os.mkfifo(fifo)
    argv = [*command, "--out", str(fifo)]
    if command[0] == "fio":
        good = tmp_path / "r.json"
        good.write_text(json.dumps({"jobs": [{"jobname": "a", "read": {"iops": 5},
                                              "write": {"iops": 5}}]}))
        argv.insert(2, str(good))
    done = subprocess.run([sys.executable, "-m", "xbq", *argv], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)  # a hang fails here
    assert done.returncode == 1 and "not a regular file" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


# --- never lost: the last line ----------------------------------------------------------------

def test_a_whole_last_row_without_its_newline_is_kept(tmp_path, cli):
    out = tmp_path / "r.csv"
    assert cli("simulate", *FAST, "--jobs", "1,2", "--out", out).rc == 0
    out.write_bytes(out.read_bytes()[:-1])  # the final newline only
    res = cli("simulate", *FAST, "--jobs", "1,2,3", "--out", out)
    assert res.rc == 0 and "completed the last row" in res.err
    assert sorted(_rows(out)["jobs"]) == [1, 2, 3]


def test_a_torn_last_row_is_cut_and_measured_again(tmp_path, cli):
    out = tmp_path / "r.csv"
    assert cli("simulate", *FAST, "--jobs", "1,2", "--out", out).rc == 0
    data = out.read_bytes()
    out.write_bytes(data[:-9])  # the row's key cut short: not a whole row
    res = cli("simulate", *FAST, "--jobs", "1,2", "--out", out)
    assert res.rc == 0 and "dropped a torn last line" in res.err
    df = _rows(out)
    assert sorted(df["jobs"]) == [1, 2] and df["point_key"].is_unique


# --- keys as strings ------------------------------------------------------------------------------

def _numeric_looking_point() -> DesPoint:
    """A point whose key pandas would read as a number (``805e6613...`` or all digits)."""
    import re

    for seed in range(1, 200_000):
        pt = DesPoint(mode="mq", jobs=1, queues=2, vcpus=2, iodepth=4, duration_s=0.002,
                      seed=seed)
        if re.fullmatch(r"\d+(e\d+)?", pt.key):
            return pt
    raise AssertionError("no numeric-looking key in 200000 seeds")


def test_keys_that_look_like_numbers_are_found_again(tmp_path):
    pt = _numeric_looking_point()
    assert pd.read_csv(io.StringIO(f"k\n{pt.key}\n"))["k"].dtype != object
    calls = []

    def run_one(p):
        calls.append(p.key)
        return simulate_point(p, quiet=True)

    for _ in range(2):
        with ResultsStore(tmp_path / "r.csv", {"command": "test"}, axes=("seed",)) as store:
            run_points([pt], run_one, store)
    assert calls == [pt.key]  # the second run found it
    assert _rows(tmp_path / "r.csv")["point_key"].tolist() == [pt.key]


# --- one configuration ----------------------------------------------------------------------------

@pytest.mark.parametrize("change, needle", [
    (["--duration", "0.003"], "duration_s 0.002 there, 0.003 here"),
    (["--mode", "sq"], 'mode "mq" there, "sq" here'),
    (["--iodepth", "8"], "iodepth 4 there, 8 here"),
    (["--params", "P"], "params.submit_ns"),
])
def test_a_changed_configuration_is_refused_unless_mixed(tmp_path, cli, change, needle):
    out = tmp_path / "r.csv"
    params = tmp_path / "p.json"
    params.write_text('{"submit_ns": 7000}')
    change = [str(params) if c == "P" else c for c in change]
    assert cli("simulate", *FAST, "--jobs", "1", "--out", out).rc == 0
    before = out.read_bytes()
    cli("simulate", *FAST, *change, "--jobs", "1", "--out", out).one_line_error(needle)
    assert out.read_bytes() == before
    assert cli("simulate", *FAST, *change, "--jobs", "1", "--out", out, "--mixed").rc == 0
    df = _rows(out)
    assert len(df) == 2 and df["config"].nunique() == 2  # each row carries its own
    # seeds and new job counts are the store's axes: no --mixed needed
    assert cli("simulate", *FAST, "--jobs", "2", "--seed", "5", "--out", out).rc == 0


def test_every_row_carries_its_whole_configuration(tmp_path, cli):
    out = tmp_path / "r.csv"
    assert cli("simulate", *FAST, "--jobs", "1", "--out", out).rc == 0
    row = _rows(out).iloc[0]
    config = json.loads(row["config"])
    assert key_of(row["config"]) == row["point_key"]
    assert config["duration_s"] == 0.002 and config["iodepth"] == 4
    assert config["params"]["submit_ns"] == 6000.0 and config["params"]["lock_mcs"] is False


def test_a_row_filed_under_another_points_key_is_refused(tmp_path, cli):
    out = tmp_path / "r.csv"
    assert cli("simulate", *FAST, "--jobs", "1,2", "--out", out).rc == 0
    df = _rows(out)
    df.loc[1, "point_key"] = df.loc[0, "point_key"]
    df.to_csv(out, index=False)
    before = out.read_bytes()
    cli("simulate", *FAST, "--jobs", "1,2", "--out", out).one_line_error(
        "row 2: its point_key is not the hash of its config")
    assert out.read_bytes() == before


@pytest.mark.parametrize("edit", ["rename point_key", "drop a column", "drop config"])
def test_a_store_with_an_edited_header_is_never_added_to(tmp_path, cli, edit):
    out = tmp_path / "r.csv"
    assert cli("simulate", *FAST, "--jobs", "1", "--out", out).rc == 0
    df = _rows(out)
    if edit == "rename point_key":
        df = df.rename(columns={"point_key": "key"})
    else:
        df = df.drop(columns=["iops" if edit == "drop a column" else "config"])
    df.to_csv(out, index=False)
    before = out.read_bytes()
    cli("simulate", *FAST, "--jobs", "1,2", "--out", out).one_line_error(
        "not an xbq results store")
    assert out.read_bytes() == before


# --- provenance -------------------------------------------------------------------------------

def test_a_copy_without_git_inside_another_repository_names_no_commit(tmp_path):
    other = tmp_path / "someone-elses-repo"
    other.mkdir()
    subprocess.run(["git", "init", "-q", str(other)], check=True)
    (other / "README").write_text("not xbq\n")
    subprocess.run(["git", "-C", str(other), "add", "README"], check=True)
    subprocess.run(["git", "-C", str(other), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-qm", "theirs"], check=True)
    copy = other / "vendored" / "xbq-copy"
    shutil.copytree(ROOT / "xbq", copy / "xbq",
                    ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run([sys.executable, "-c", "from xbq.study.paths import git_commit; "
                          "print(git_commit())"], capture_output=True, text=True, cwd=copy,
                         env={**os.environ, "PYTHONPATH": str(copy)}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None"
