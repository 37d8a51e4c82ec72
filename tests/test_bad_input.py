"""Bad input of every class, driven through the CLI: one line on stderr, a non-zero exit,
no traceback, nothing compiled or written."""

import pytest


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
def test_fit_bad_tables(tmp_path, cli, rows, needle):
    cli("fit", table(tmp_path, rows), "--model", "usl", "--bootstrap", "0").one_line_error(needle)


def test_fit_constant_column_must_be_finite(tmp_path, cli):
    rows = ["a,1,16,inf,100", "a,2,16,inf,180", "a,4,16,inf,300", "a,8,16,inf,350"]
    cli("fit", table(tmp_path, rows, "series,jobs,queues,vcpus,iops"), "--model", "usl-capped",
        "--bootstrap", "0").one_line_error("non-finite")


def test_fit_report_survives_missing_statistics(tmp_path, cli):
    """Flat data (R² undefined), as many points as parameters (no AICc, no LOO): a report."""
    res = cli("fit", table(tmp_path, ["a,1,100", "a,2,100", "a,4,100"]), "--model", "usl",
              "--bootstrap", "20")
    assert res.rc == 0 and "n/a" in res.out and "[[Variables]]" in res.out


# --- xbq simulate / measure / calibrate -------------------------------------------------------

@pytest.mark.parametrize("argv, needle", [
    (["--duration", "inf"], "--duration"),
    (["--duration", "nan"], "--duration"),
    (["--duration", "0"], "duration_s must be > 0"),
    (["--duration", "1e9"], "at most 1000"),
    (["--warmup", "inf"], "--warmup"),
    (["--warmup", "-1"], "warmup_s must be >= 0"),
    (["--seed", "-1"], "--seed"),
    (["--queues", "5000"], "queues must be between 1 and 1024"),
    (["--vcpus", "100000"], "vcpus must be between 1 and 1024"),
    (["--jobs", "1,100000"], "jobs must be between 1 and 4096"),
    (["--iodepth", "10000000"], "iodepth must be between 1 and 65536"),
])
def test_simulate_bad_arguments(cli, tmp_path, argv, needle):
    out = tmp_path / "never.csv"
    cli("simulate", "--out", out, *argv).one_line_error(needle)
    assert not out.exists() and not (tmp_path / "never.csv.meta.json").exists()


@pytest.mark.parametrize("argv, needle", [
    (["--pcpus", "-16"], "pcpus must be between 0 and 256, not -16"),
    (["--pcpus", "0,-4"], "pcpus must be between 0 and 256, not -4"),
    (["--pcpus", "inf"], "pcpus must be an integer, not inf"),
    (["--pcpus", "20", "--pcpu-boost", "2"], "pcpu_boost must be true or false"),
    (["--job-placement", "-1"], "job_placement must be true or false"),
    (["--dom0-vcpus", "1000"], "dom0_vcpus must be between 1 and 64, not 1000"),
    (["--seed", "-2"], "--seed"),
    (["--fit-requests", "0"], "--fit-requests"),
])
def test_calibrate_bad_arguments(cli, argv, needle):
    cli("calibrate", "--quiet", *argv).one_line_error(needle)


def test_calibrate_bad_table(tmp_path, cli):
    rows = ["single_ring,1,1,16,inf"]
    cli("calibrate", table(tmp_path, rows, "series,jobs,queues,vcpus,iops"),
        "--quiet").one_line_error("non-finite")


@pytest.mark.parametrize("argv, needle", [
    (["--duration", "inf"], "--duration"),
    (["--jobs", "2000"], "jobs must be between 1 and 1024"),
    (["--jobs", "1,1"], "lists 1 more than once"),
    (["--seed", "-1"], "--seed"),
])
def test_measure_bad_arguments(cli, tmp_path, argv, needle):
    out = tmp_path / "never.csv"
    cli("measure", "--out", out, *argv).one_line_error(needle)
    assert not out.exists()


def test_existing_out_is_never_deleted(cli, tmp_path):
    out = tmp_path / "keep.csv"
    out.write_text("engine,mode\nnative,sq\n")
    cli("simulate", "--out", out, "--no-resume", "--jobs", "1").one_line_error("--overwrite")
    assert out.read_text() == "engine,mode\nnative,sq\n"
    # not a store xbq wrote: neither resumed nor replaced
    cli("simulate", "--out", out, "--jobs", "1").one_line_error("not an xbq results store")
    cli("simulate", "--out", out, "--overwrite", "--jobs", "1").one_line_error(
        "not replacing it")
    assert out.read_text() == "engine,mode\nnative,sq\n"
