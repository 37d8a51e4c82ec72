"""``xbq simulate`` and ``xbq calibrate`` from the command line."""

import json

import pytest

from xbq.cli import main
from xbq.engines.schema import COLUMNS
from xbq.study.datasets import load_seed


def test_simulate_json_rows(capsys):
    rc = main(["simulate", "--mode", "mq", "--jobs", "1,4", "--duration", "0.005", "--json"])
    assert rc == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["jobs"] for r in rows] == [1, 4]
    for r in rows:
        assert list(r)[:len(COLUMNS)] == list(COLUMNS)
        assert r["engine"] == "des" and r["iops"] > 0


def test_simulate_table_and_out(tmp_path, capsys):
    out = tmp_path / "r.csv"
    rc = main(["simulate", "--mode", "sq", "--jobs", "2", "--duration", "0.005",
               "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].split()[:4] == ["mode", "jobs", "rings", "IOPS"]
    iops = text[1].split()[3]
    assert "e+" not in iops and (len(iops) < 4 or "," in iops)  # 96,500, not 9.65e+04
    assert max(len(line) for line in text) < 160
    assert out.exists() and (tmp_path / "r.csv.meta.json").exists()


def test_simulate_params_file_errors_are_one_line(tmp_path, cli):
    f = tmp_path / "p.json"
    f.write_text('{"submit_ns": 4000, "typo_ns": 1}')
    cli("simulate", "--jobs", "1", "--duration", "0.001", "--params", f).one_line_error(
        "unknown parameter(s): typo_ns")


def test_simulate_reads_calibrated_params(capsys):
    from xbq.study.paths import data_dir

    path = data_dir() / "calibrated" / "des-params.json"
    rc = main(["simulate", "--jobs", "1", "--duration", "0.002", "--params", str(path),
               "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)[0]["iops"] > 0


def test_calibrate_json_shape(capsys):
    rc = main(["calibrate", "--json", "--quiet", "--fit-requests", "300", "--max-nfev", "1",
               "--final-requests", "500"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"params", "points", "median_rel_error", "max_rel_error"}
    assert len(out["points"]) == 12
    assert set(out["points"][0]) == {"series", "jobs", "measured", "simulated", "rel_error",
                                     "rel_se"}


def test_calibrate_tries_each_machine_and_keeps_the_best():
    from xbq.study.calibrate import calibrate

    res = calibrate(load_seed(), fit=("submit_ns",),
                    machines=[{"pcpus": 0.0}, {"pcpus": 4.0}],
                    fit_requests=300, max_nfev=2, final_requests=500)
    out = res.to_dict()
    assert list(res.params) == ["submit_ns"] and res.ndata == 12 and res.nfree == 11
    assert res.chisqr == pytest.approx(sum(p["rel_error"] ** 2 for p in out["points"]))
    assert out["statistics"]["aic"] == res.aic and res.bic > res.aic  # ln 12 > 2
    assert [m["fixed"] for m in out["machines"]] == [{"pcpus": 0.0}, {"pcpus": 4.0}]
    best = min(out["machines"], key=lambda m: m["cost"])
    assert out["machine"] == best["fixed"]
    assert out["params"]["pcpus"] == best["fixed"]["pcpus"]


def test_calibrate_cli_tries_every_combination_of_settings(tmp_path):
    out = tmp_path / "cal.json"
    rc = main(["calibrate", "--quiet", "--fit", "submit_ns", "--pcpus", "0,24",
               "--pcpu-boost", "0,1", "--dom0-vcpus", "8,16", "--fit-requests", "200",
               "--max-nfev", "1", "--final-requests", "300", "--out", str(out)])
    assert rc == 0
    fixed = [m["fixed"] for m in json.loads(out.read_text())["machines"]]
    # pcpus 0 has no boost to vary: 2 settings; pcpus 24: 2 boosts x 2 dom0 sizes
    assert len(fixed) == 6 and {m["dom0_vcpus"] for m in fixed} == {8.0, 16.0}
    assert sum(m["pcpus"] == 0.0 for m in fixed) == 2
    assert all("pcpu_boost" not in m for m in fixed if m["pcpus"] == 0.0)


def test_calibrate_cli_random_placements_and_interrupt_binding(tmp_path):
    out = tmp_path / "cal.json"
    rc = main(["calibrate", "--quiet", "--fit", "submit_ns", "--job-placement", "1",
               "--placements", "2", "--final-placements", "3", "--irq-spread", "0,1",
               "--polish-nfev", "1",
               "--fit-requests", "200", "--max-nfev", "1", "--final-requests", "300",
               "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert [m["fixed"]["irq_spread"] for m in res["machines"]] == [0.0, 1.0]
    assert all(m["fixed"]["job_placement"] == 1.0 for m in res["machines"])
    # searched on 2 placements a point, refitted and checked on 3: each mean has an error
    assert res["params"]["placements"] == 2.0 and res["fit"]["final_placements"] == 3
    assert res["fit"]["polish"]["nfev"] >= 1 and res["fit"]["polish"]["placements"] == 3
    assert any(p["rel_se"] > 0 for p in res["points"])


@pytest.mark.parametrize("argv, needle", [
    (["--pcpus", "a,b"], "--pcpus"), (["--dom0-vcpus", "8;16"], "--dom0-vcpus"),
    (["--dom0-vcpus", "0"], "dom0_vcpus"), (["--fit", "nope_ns"], "nope_ns")])
def test_calibrate_bad_arguments_one_line(cli, argv, needle):
    cli("calibrate", *argv, "--quiet").one_line_error(needle)


def test_calibrate_progress_on_a_table_of_fewer_than_seven_points(tmp_path, capsys):
    from xbq.study.paths import seed_csv

    small = tmp_path / "small.csv"
    small.write_text("".join(seed_csv().read_text().splitlines(keepends=True)[:5]))
    rc = main(["calibrate", str(small), "--fit", "submit_ns", "--fit-requests", "200",
               "--max-nfev", "1", "--final-requests", "300", "--verbose"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "setting 1/1" in err and "eval 1:" in err and "median" in err


def test_calibrate_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    """A killed calibration keeps every machine setting already fitted: the rerun takes them
    from ``OUT.partial.jsonl`` and gives the same result."""
    import xbq.study.calibrate as C
    from xbq.study.calibrate import calibrate

    ck = tmp_path / "c.partial.jsonl"
    kw = dict(fit=("submit_ns",), machines=[{"pcpus": 0.0}, {"pcpus": 0.0, "dom0_vcpus": 8.0}],
              fit_requests=300, max_nfev=2, final_requests=400, checkpoint=ck)
    first = calibrate(load_seed(), **kw).to_dict()
    assert len(ck.read_text().splitlines()) == 2
    with ck.open("a") as fh:
        fh.write('{"key": "torn')  # a killed run's last line
    monkeypatch.setattr(C, "_fit_one", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    again = calibrate(load_seed(), **kw).to_dict()
    assert all(m["resumed"] for m in again["machines"])
    assert again["params"] == first["params"] and again["points"] == first["points"]


def test_uncalibrated_costs_are_said_once_on_stderr(cli):
    res = cli("simulate", "--mode", "mq", "--jobs", "1", "--duration", "0.002")
    assert res.rc == 0
    lines = [line for line in res.err.splitlines() if "not calibrated" in line]
    assert len(lines) == 1 and "--params data/calibrated/des-params-determined.json" in lines[0]
    res = cli("simulate", "--mode", "mq", "--jobs", "1", "--duration", "0.002", "--params",
              "data/calibrated/des-params.json")
    assert res.rc == 0 and "not calibrated" not in res.err
