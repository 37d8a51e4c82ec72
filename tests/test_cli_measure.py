"""``xbq measure``: options, one-line errors, JSON rows, points appended to --out."""

import json

import pandas as pd
import pytest

from xbq.cli import main

pytestmark = pytest.mark.threads
FAST = ["--duration", "0.2", "--warmup", "0.05", "--vcpus", "2", "--queues", "2",
        "--iodepth", "4"]


@pytest.mark.parametrize("argv, match", [
    (["--jobs", "0"], "--jobs"),
    (["--jobs", "1,0,4"], "--jobs"),
    (["--iodepth", "0"], "--iodepth"),
    (["--lock", "spin"], "--lock"),
    (["--mode", "xq"], "--mode"),
    (["--device", "nvme"], "--device"),
    (["--queues", "32", "--vcpus", "32"], "32 queues exceed the backend's maximum of 16"),
    (["--queues", "4", "--vcpus", "2"], "4 queues exceed the 2 vCPUs"),
    (["--ring-page-order", "5"], "ring_page_order must be between 0 and 4, not 5"),
    (["--duration", "inf"], "--duration"),
    (["--warmup", "nan"], "--warmup"),
    (["--seed", "-3"], "--seed"),
    (["--queues", "2048", "--vcpus", "4096"], "queues must be between 1 and 1024"),
    (["--bssplit", "4k/50"], "sum to 50"),
    (["--out", "/nonexistent/dir/x.csv", "--jobs", "1"], "does not exist"),
])
def test_bad_arguments_give_one_line_and_nonzero_exit(argv, match, cli):
    cli("measure", *argv).one_line_error(match)


def _exit_code(argv):
    try:
        return main(argv)
    except SystemExit as exc:  # argparse errors exit through SystemExit
        return exc.code


def test_argparse_errors_exit_nonzero(capsys):
    assert _exit_code(["measure", "--jobs", "0"]) == 2
    assert _exit_code(["measure", "--lock", "spin"]) == 2
    assert _exit_code(["measure", "--queues", "32", "--vcpus", "32"]) == 1


def test_json_rows(capsys):
    rc = main(["measure", "--mode", "sq,mq", "--jobs", "1,2", "--json", *FAST])
    out = capsys.readouterr().out
    rows = json.loads(out)
    assert rc == 0 and len(rows) == 4
    for row in rows:
        for key in ("engine", "mode", "jobs", "queues", "iodepth", "iops", "submitted",
                    "completed", "lost", "duplicated"):
            assert key in row
        assert row["engine"] == "native" and row["completed"] == row["submitted"]
    assert [(r["mode"], r["jobs"]) for r in rows] == [("sq", 1), ("mq", 1), ("sq", 2), ("mq", 2)]


def test_out_file_gets_every_point_and_a_sidecar(tmp_path, capsys):
    out = tmp_path / "iops.csv"
    rc = main(["measure", "--mode", "mq", "--jobs", "1,2", "--device", "ramdisk",
               "--out", str(out), *FAST])
    text = capsys.readouterr().out
    assert rc == 0 and "2 point(s) in" in text and "jobs=2" in text
    df = pd.read_csv(out)
    assert df["jobs"].tolist() == [1, 2] and (df["data_verified"]).all()
    meta = json.loads((tmp_path / "iops.csv.meta.json").read_text())
    assert meta["command"] == "xbq measure" and meta["arguments"]["jobs"] == [1, 2]
    assert meta["arguments"]["device"] == "ramdisk" and meta["xbq_store"]["kind"] == "results"


def test_rerun_with_the_same_out_resumes(tmp_path, capsys):
    """A second run keeps every stored point, measures only the new ones, deletes nothing."""
    out = tmp_path / "iops.csv"
    argv = ["measure", "--mode", "mq", "--out", str(out), *FAST]
    assert main([*argv, "--jobs", "1,2"]) == 0
    first = out.read_bytes()
    assert main([*argv, "--jobs", "1,2,3"]) == 0
    assert out.read_bytes().startswith(first)
    df = pd.read_csv(out)
    assert df["jobs"].tolist() == [1, 2, 3] and df["point_key"].is_unique
    assert _exit_code([*argv, "--jobs", "1", "--no-resume"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--jobs", "2", "--overwrite"]) == 0
    assert pd.read_csv(out)["jobs"].tolist() == [2]
