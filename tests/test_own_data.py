"""Own data end to end (issue 22, part 3): fio import records the guest's vCPUs and rings,
and the fit says every missing setting at once, and where it comes from."""

from xbq.study.paths import data_dir

FIO = data_dir() / "examples" / "fio-iometer-null.json"


def test_import_records_vcpus_and_queues_and_the_fits_then_run(cli, tmp_path):
    out = tmp_path / "mine.csv"
    r = cli("fio", "import", FIO, "--series", "multi_ring", "--vcpus", 2, "--queues", 2,
            "--out", out)
    assert r.rc == 0 and "note" not in r.err
    import pandas as pd

    df = pd.read_csv(out)
    assert set(df["vcpus"]) == {2} and set(df["queues"]) == {2}
    for model in ("usl-capped", "mva", "repairman", "ticket"):
        f = cli("fit", out, "--model", model, "--json")
        assert f.rc == 0, (model, f.err)
    # xen-blk has its settings now; what it lacks is points (6 parameters, 5 job counts)
    assert "5 distinct jobs value(s) but 6" in cli("fit", out, "--model", "xenblk").err


def test_import_without_them_says_which_fits_will_need_them(cli, tmp_path):
    r = cli("fio", "import", FIO, "--series", "multi_ring", "--out", tmp_path / "m.csv")
    assert r.rc == 0
    assert "--vcpus" in r.err and "--queues" in r.err and "xenblk" in r.err
    r = cli("fio", "import", FIO, "--series", "multi_ring", "--vcpus", 4,
            "--out", tmp_path / "m2.csv")
    assert "--queues" in r.err and "--vcpus" not in r.err
    assert cli("fio", "import", FIO, "--vcpus", 0).rc != 0


def test_the_fit_names_every_missing_setting_at_once(cli, tmp_path):
    out = tmp_path / "m.csv"
    cli("fio", "import", FIO, "--series", "multi_ring", "--out", out)
    msg = cli("fit", out, "--model", "xenblk").one_line_error("needs")
    assert "'vcpus'" in msg and "'queues'" in msg
    assert "xbq fio import --vcpus N --queues N" in msg


def test_sections_imported_as_their_own_series_get_the_series_hint(cli, tmp_path):
    import pandas as pd

    out = tmp_path / "m.csv"
    cli("fio", "import", FIO, "--series-pattern", r"(.*)", "--vcpus", 2, "--out", out)
    df = pd.read_csv(out)
    assert df["series"].nunique() == len(df)  # one series per section
    msg = cli("fit", out, "--model", "usl").one_line_error("one point")
    assert "--series" in msg and "--fix" not in msg


def test_reproduce_own_puts_your_fio_results_into_the_published_page(tmp_path):
    """xbq reproduce --own FILE: the own_data chapter fits the reader's file (its series and
    vCPUs), and a changed file is not reused from a previous run."""
    import json

    import pandas as pd

    from xbq.study.reproduce import reproduce

    mine = tmp_path / "mine.json"
    doc = json.loads(FIO.read_text())
    for job in doc["jobs"]:
        job["jobname"] = job["jobname"].replace("iometer", "myguest")
    mine.write_text(json.dumps(doc))
    out = tmp_path / "out"
    lines = []
    assert reproduce(out, quick=True, steps=["own_data"], progress=False, echo=lines.append,
                     own=[mine], own_vcpus=4) == []
    scores = pd.read_csv(out / "own_data-models.csv")
    assert set(scores["series"]) - {"all"} == {"myguest"}
    page = (out / "chapters" / "own_data.html").read_text()
    assert "myguest" in page
    # the same file again: reused; another file: run again
    lines.clear()
    reproduce(out, quick=True, steps=["own_data"], progress=False, echo=lines.append,
              own=[mine], own_vcpus=4)
    assert any("[own_data] reused" in s for s in lines)
    lines.clear()
    reproduce(out, quick=True, steps=["own_data"], progress=False, echo=lines.append,
              own=[mine], own_vcpus=8)
    assert not any("[own_data] reused" in s for s in lines)


def test_reproduce_own_refuses_a_missing_file(cli, tmp_path):
    cli("reproduce", "--own", tmp_path / "none.json", "--out", tmp_path / "o") \
        .one_line_error("no such file")
