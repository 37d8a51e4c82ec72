"""``xbq fit``: JSON shape, report, and one-line errors for bad input."""

import json

import pytest

from xbq.study.paths import seed_csv


@pytest.fixture
def run(cli):
    """``run(*argv)``: ``xbq fit ARGV`` as ``(exit status, stdout, stderr)``."""
    def fit(*argv):
        res = cli("fit", *argv)
        return res.rc, res.out, res.err
    return fit


def test_json_has_the_documented_fields(run):
    rc, out, err = run(seed_csv(), "--model", "usl-capped", "--bootstrap", "50",
                       "--json")
    assert rc == 0, err
    d = json.loads(out)
    assert d["model"] == "usl-capped" and 0 < d["r2"] <= 1
    for s in ("single_ring", "multi_ring"):
        e = d["series"][s]
        for key in ("params", "stderr", "ci", "r2", "rmse", "loo_rmse", "aicc", "peak_x",
                    "peak_iops"):
            assert key in e
        assert e["params"]["cap"] == 16
        assert e["ci"]["alpha"][0] <= e["ci"]["alpha"][1]
    assert d["series"]["single_ring"]["r2"] >= 0.97


def test_joint_fix_and_report(run):
    rc, out, err = run(seed_csv(), "--model", "xenblk", "--joint", "--fix",
                       "t_back=0.2", "--bootstrap", "0", "--seed", "3")
    assert rc == 0, err
    assert "[[Variables]]" in out and "t_back=0.2" in out and "joint fit" in out


def test_fix_supplies_a_missing_constant(tmp_path, run):
    f = tmp_path / "t.csv"
    f.write_text("queues,iops\n1,100\n2,190\n4,330\n8,420\n16,380\n32,300\n")
    rc, out, err = run(f, "--model", "usl-capped", "--x", "queues")
    assert rc == 1 and "--fix cap=" in err and len(err.strip().splitlines()) == 1
    rc, out, err = run(f, "--model", "usl-capped", "--x", "queues", "--fix", "cap=16",
                       "--json", "--bootstrap", "20")
    assert rc == 0, err
    assert json.loads(out)["series"]["all"]["params"]["cap"] == 16


def test_a_cpu_axis_without_vcpus_caps_contenders_at_its_largest_count(tmp_path, run):
    f = tmp_path / "t.csv"
    f.write_text("cores,iops\n1,100\n2,190\n4,330\n8,420\n16,380\n32,300\n")
    rc, out, err = run(f, "--model", "usl-capped", "--json", "--bootstrap", "0")
    assert rc == 0, err
    d = json.loads(out)
    assert d["x"] == "cores" and d["series"]["all"]["params"]["cap"] == 32
    assert any("no 'vcpus' column" in w for w in d["warnings"])


@pytest.mark.parametrize("content,args,needle", [
    ("jobs,iops\n1,100\n2,150\n", ["--model", "usl"], "free parameters"),
    ("jobs,iops\n1,100\n2,-150\n4,3\n", ["--model", "usl"], "positive"),
    ("jobs,speed\n1,100\n2,150\n", ["--model", "usl"], "missing column"),
    ("jobs,iops\n1,100\n2,150\n4,200\n8,220\n", ["--model", "nope"], "unknown model"),
    ("jobs,iops\n1,100\n2,150\n4,200\n8,220\n", ["--model", "usl", "--fix", "beta"],
     "NAME=VALUE"),
    ("jobs,iops\n1,100\n2,150\n4,200\n8,220\n", ["--model", "usl", "--fix", "beta=x"],
     "not a number"),
    ("jobs,iops\n1,100\n2,150\n4,200\n8,220\n", ["--model", "usl", "--fix", "cap=16"],
     "no parameter"),
    ("jobs,iops\n1,100\n2,150\n4,200\n8,220\n", ["--model", "usl", "--series", "driver"],
     "missing column"),
    ("jobs,iops\n1,100\n2,150\n4,200\n8,220\n", ["--model", "xenblk", "--joint"],
     "--fix vcpus="),
])
def test_bad_input_is_one_line(tmp_path, cli, content, args, needle):
    f = tmp_path / "bad.csv"
    f.write_text(content)
    cli("fit", f, *args).one_line_error(needle)


def test_profile_on_request(run):
    rc, out, err = run(seed_csv(), "--model", "ticket", "--bootstrap", "0",
                       "--profile", "handoff", "--series", "series")
    assert rc == 0, err
    assert "[[Profile likelihood]] handoff" in out
