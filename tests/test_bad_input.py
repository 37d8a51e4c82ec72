"""Bad input of every class, driven through the CLI: one line on stderr, a non-zero exit,
no traceback, nothing compiled or written."""

import pytest

from xbq.cli import main
from xbq.study.paths import seed_csv


def run(argv, capsys):
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse errors leave through SystemExit
        rc = exc.code
    err = capsys.readouterr().err
    return rc, err


def assert_one_line(rc, err, needle, prog):
    assert rc in (1, 2), (rc, err)
    assert err.count("\n") == 1 and err.startswith(f"xbq {prog}: error:"), err
    assert "Traceback" not in err and needle in err, err


def table(tmp_path, rows, header="series,jobs,iops"):
    path = tmp_path / "t.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return str(path)


# --- xbq fit ------------------------------------------------------------------------------------

@pytest.mark.parametrize("rows, needle", [
    (["a,1,100", "a,2,inf", "a,4,300", "a,8,350"], "non-finite"),
    (["a,1,100", "a,inf,200", "a,4,300", "a,8,350"], "non-finite"),
    (["a,1,100", "a,2,-inf", "a,4,300", "a,8,350"], "non-finite"),
    (["a,1,100", "a,2,1e400", "a,4,300", "a,8,350"], "non-finite"),
    (["a,1,100", "a,2,1e300", "a,4,300", "a,8,350"], "beyond"),
    (["a,1,100", "a,1e300,200", "a,4,300", "a,8,350"], "beyond"),
    (["a,4,100", "a,4,110", "a,4,105", "a,4,99"], "1 distinct jobs value(s) but 3 free"),
    (["a,1,100", "a,2,180"], "2 distinct jobs value(s) but 3 free"),
    (["a,0,100", "a,2,180", "a,4,300", "a,8,350"], "must be positive"),
    (["a,-1,100", "a,2,180", "a,4,300", "a,8,350"], "must be positive"),
    (["a,0.5,100", "a,2,180", "a,4,300", "a,8,350"], "must be >= 1"),
    (["a,1,nan", "a,2,180", "a,4,300", "a,8,350"], "non-numeric"),
])
def test_fit_bad_tables(tmp_path, capsys, rows, needle):
    rc, err = run(["fit", table(tmp_path, rows), "--model", "usl", "--bootstrap", "0"], capsys)
    assert_one_line(rc, err, needle, "fit")


def test_fit_constant_column_must_be_finite(tmp_path, capsys):
    rows = ["a,1,16,inf,100", "a,2,16,inf,180", "a,4,16,inf,300", "a,8,16,inf,350"]
    rc, err = run(["fit", table(tmp_path, rows, "series,jobs,queues,vcpus,iops"),
                   "--model", "usl-capped", "--bootstrap", "0"], capsys)
    assert_one_line(rc, err, "non-finite", "fit")


def test_fit_report_survives_missing_statistics(tmp_path, capsys):
    """Flat data (R² undefined), as many points as parameters (no AICc, no LOO): a report."""
    rows = ["a,1,100", "a,2,100", "a,4,100"]
    rc = main(["fit", table(tmp_path, rows), "--model", "usl", "--bootstrap", "20"])
    out = capsys.readouterr().out
    assert rc == 0 and "n/a" in out and "[[Variables]]" in out


# --- xbq simulate / measure / calibrate -------------------------------------------------------

@pytest.mark.parametrize("argv, needle", [
    (["--duration", "inf"], "--duration"),
    (["--duration", "nan"], "--duration"),
    (["--duration", "0"], "duration must be > 0"),
    (["--duration", "1e9"], "at most 1000 s"),
    (["--warmup", "inf"], "--warmup"),
    (["--warmup", "-1"], "warmup must be >= 0"),
    (["--seed", "-1"], "--seed"),
    (["--queues", "5000"], "queues must be between 1 and 1024"),
    (["--vcpus", "100000"], "vcpus must be between 1 and 1024"),
    (["--jobs", "1,100000"], "jobs must be between 1 and 4096"),
    (["--iodepth", "10000000"], "iodepth must be between 1 and 65536"),
])
def test_simulate_bad_arguments(capsys, tmp_path, argv, needle):
    out = tmp_path / "never.csv"
    rc, err = run(["simulate", "--out", str(out), *argv], capsys)
    assert_one_line(rc, err, needle, "simulate")
    assert not out.exists() and not (tmp_path / "never.csv.meta.json").exists()


@pytest.mark.parametrize("argv, needle", [
    (["--pcpus", "-16"], "pcpus=-16"),
    (["--pcpus", "0,-4"], "pcpus=-4"),
    (["--pcpus", "inf"], "pcpus=inf"),
    (["--pcpus", "20", "--pcpu-boost", "2"], "pcpu_boost=2"),
    (["--job-placement", "-1"], "job_placement=-1"),
    (["--dom0-vcpus", "1000"], "dom0_vcpus=1000"),
    (["--seed", "-2"], "--seed"),
    (["--fit-requests", "0"], "--fit-requests"),
])
def test_calibrate_bad_arguments(capsys, argv, needle):
    rc, err = run(["calibrate", "--quiet", *argv], capsys)
    assert_one_line(rc, err, needle, "calibrate")


def test_calibrate_bad_table(tmp_path, capsys):
    rows = ["single_ring,1,1,16,inf"]
    rc, err = run(["calibrate", table(tmp_path, rows, "series,jobs,queues,vcpus,iops"),
                   "--quiet"], capsys)
    assert_one_line(rc, err, "non-finite", "calibrate")


@pytest.mark.parametrize("argv, needle", [
    (["--duration", "inf"], "--duration"),
    (["--jobs", "2000"], "jobs must be between 1 and 1024"),
    (["--seed", "-1"], "--seed"),
])
def test_measure_bad_arguments(capsys, tmp_path, argv, needle):
    out = tmp_path / "never.csv"
    rc, err = run(["measure", "--out", str(out), *argv], capsys)
    assert_one_line(rc, err, needle, "measure")
    assert not out.exists()


def test_existing_out_is_never_deleted(capsys, tmp_path):
    out = tmp_path / "keep.csv"
    out.write_text("engine,mode\nnative,sq\n")
    rc, err = run(["simulate", "--out", str(out), "--no-resume", "--jobs", "1"], capsys)
    assert_one_line(rc, err, "--overwrite", "simulate")
    assert out.read_text() == "engine,mode\nnative,sq\n"


def test_seed_table_is_accepted(capsys):
    assert seed_csv().exists()
