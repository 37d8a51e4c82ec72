"""Hostile files of every kind xbq reads, refused whole by their typed schemas: fio's JSON, sweep
files, parameter files. Each is one line on stderr and a non-zero exit: never a traceback,
an "internal error", a hang, a wrong table or a run that starts.

The corpora are built here case by case (a wrong type at every field xbq reads, numbers out
of range or of thousands of digits, nesting too deep, special files, structures that would
import the wrong table); ``test_corpus_sizes`` states how many of each kind are tried.
"""

import copy
import json
import math
import os

import pytest

# --- fio JSON ------------------------------------------------------------------------------------

GOOD_FIO = {
    "fio version": "fio-3.33", "timestamp": 1700000000,
    "global options": {"rw": "randrw", "bssplit": "4k/100", "iodepth": "8"},
    "jobs": [{
        "jobname": "iometer-jobs2", "groupid": 0, "error": 0,
        "job options": {"numjobs": "2"},
        "read": {"iops": 1000.5, "bw_bytes": 4096000, "bw": 4000, "total_ios": 300,
                 "runtime": 300, "clat_ns": {"N": 300, "mean": 2000.0,
                                             "percentile": {"50.000000": 1800,
                                                            "99.000000": 5000},
                                             "bins": {"1800": 200, "5000": 100}}},
        "write": {"iops": 250.25, "bw_bytes": 1024000, "bw": 1000, "total_ios": 75,
                  "runtime": 300, "clat_ns": {"N": 75, "mean": 2500.0}},
        "job_runtime": 300}],
}


def _set(doc, path, value):
    d = copy.deepcopy(doc)
    node = d
    for k in path[:-1]:
        node = node[k]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return d


_DELETE = object()
J = ("jobs", 0)
#: (name, document or raw text, what the one line says)
FIO_CASES = [
    *[(f"jobname-{t}", _set(GOOD_FIO, (*J, "jobname"), v), "jobname must be a string")
      for t, v in (("int", 5), ("null", None), ("list", ["a"]), ("bool", True))],
    *[(f"groupid-{t}", _set(GOOD_FIO, (*J, "groupid"), v), "groupid")
      for t, v in (("str", "0"), ("neg", -1), ("float", 0.5), ("huge", 10 ** 400))],
    *[(f"error-{t}", _set(GOOD_FIO, (*J, "error"), v), "error")
      for t, v in (("str", "x"), ("huge", 10 ** 40), ("list", []))],
    *[(f"options-{t}", _set(GOOD_FIO, (*J, "job options"), v), "job options")
      for t, v in (("list", ["numjobs=2"]), ("number-value", {"numjobs": 2}),
                   ("null-value", {"numjobs": None}), ("str", "numjobs=2"))],
    *[(f"numjobs-{t}", _set(GOOD_FIO, (*J, "job options", "numjobs"), v), "numjobs")
      for t, v in (("exp", "1e308"), ("frac", "2.7"), ("word", "two"), ("zero", "0"),
                   ("neg", "-4"), ("huge", "9" * 400), ("empty", ""))],
    *[(f"iodepth-{t}", _set(GOOD_FIO, ("global options", "iodepth"), v), "iodepth")
      for t, v in (("frac", "1.5"), ("zero", "0"), ("word", "deep"))],
    *[(f"{d}-iops-{t}", _set(GOOD_FIO, (*J, d, "iops"), v), f"{d}.iops")
      for d in ("read", "write")
      for t, v in (("bool", True), ("str", "1000"), ("null", None), ("neg", -1.0),
                   ("1e308", 1e308), ("400-digits", 10 ** 400), ("list", [1]))],
    *[(f"{d}-missing", _set(GOOD_FIO, (*J, d), _DELETE), f"{d} is missing")
      for d in ("read", "write")],
    ("read-not-object", _set(GOOD_FIO, (*J, "read"), [1, 2]), "read"),
    ("read-iops-missing", _set(GOOD_FIO, (*J, "read", "iops"), _DELETE), "iops is missing"),
    *[(f"bw-{t}", _set(GOOD_FIO, (*J, "read", k), v), k)
      for k in ("bw_bytes", "bw")
      for t, v in (("str", "4096"), ("neg", -5), ("frac", 1.5))],
    ("total-ios-str", _set(GOOD_FIO, (*J, "read", "total_ios"), "300"), "total_ios"),
    ("runtime-neg", _set(GOOD_FIO, (*J, "read", "runtime"), -1), "runtime"),
    ("job-runtime-str", _set(GOOD_FIO, (*J, "job_runtime"), "300"), "job_runtime"),
    *[(f"clat-{t}", _set(GOOD_FIO, (*J, "read", "clat_ns", k), v), k)
      for t, k, v in (("N-str", "N", "300"), ("N-neg", "N", -1), ("mean-str", "mean", "2.0"),
                      ("mean-inf", "mean", 1e308), ("mean-bool", "mean", False),
                      ("percentile-list", "percentile", [1800]),
                      ("percentile-key", "percentile", {"median": 1800}),
                      ("percentile-value", "percentile", {"50.000000": "1800"}),
                      ("bins-list", "bins", [1, 2]), ("bins-key", "bins", {"1.5": 3}),
                      ("bins-neg", "bins", {"1800": -3}),
                      ("bins-value", "bins", {"1800": "3"}))],
    ("clat-not-object", _set(GOOD_FIO, (*J, "read", "clat_ns"), "fast"), "clat_ns"),
    ("version-int", _set(GOOD_FIO, ("fio version",), 3), "fio version"),
    ("timestamp-str", _set(GOOD_FIO, ("timestamp",), "now"), "timestamp"),
    ("global-options-list", _set(GOOD_FIO, ("global options",), ["rw"]), "global options"),
    ("jobs-empty", _set(GOOD_FIO, ("jobs",), []), "jobs"),
    ("jobs-object", _set(GOOD_FIO, ("jobs",), {"a": 1}), "jobs"),
    ("jobs-missing", _set(GOOD_FIO, ("jobs",), _DELETE), "no jobs"),
    ("job-not-object", _set(GOOD_FIO, ("jobs",), [5]), "jobs[0]"),
    ("two-sections-one-name",
     {**GOOD_FIO, "jobs": [_set(GOOD_FIO, (*J, "job options", "numjobs"), "1")["jobs"][0]] * 2},
     "2 entries"),
    ("clones-fewer-than-numjobs",
     {**GOOD_FIO, "jobs": [_set(GOOD_FIO, (*J, "job options", "numjobs"), "4")["jobs"][0]] * 2},
     "numjobs=4"),
    ("top-level-array", [GOOD_FIO, GOOD_FIO], "not list"),
    ("top-level-string", "\"fio\"", "holds no fio JSON"),
    ("two-documents", json.dumps(GOOD_FIO) + "\n" + json.dumps(GOOD_FIO), "2 JSON documents"),
    ("5000-digit-number", '{"jobs": [{"jobname": "a", "read": {"iops": ' + "9" * 5000
     + '}, "write": {"iops": 1}}]}', "thousands of digits"),
    ("deep-nesting", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("deep-object-nesting", '{"a":' * 50_000 + "1" + "}" * 50_000, "nested too deeply"),
    ("truncated", json.dumps(GOOD_FIO)[:-40], "truncated"),
    ("malformed", '{"jobs": [}', "malformed"),
    ("terse", "3;fio-3.33;a;0;0;1;2;3;4\n", "terse format"),
    ("no-json", "nothing here\n", "holds no fio JSON"),
    ("binary", b"\x00\xff\xfe{\x00garbage", "JSON"),
    ("nan-literal", '{"jobs": [{"jobname": "a", "read": {"iops": NaN}, "write": {"iops": 1}}]}',
     "iops must be finite"),
    ("infinity-literal", '{"jobs": [{"jobname": "a", "read": {"iops": Infinity}, '
     '"write": {"iops": 1}}]}', "iops must be finite"),
]
SPECIAL_FILES = ["/dev/zero", "/dev/null", "fifo", "directory", "symlink-to-zero", "missing"]


def _fio_file(tmp_path, doc):
    path = tmp_path / "r.json"
    if isinstance(doc, bytes):
        path.write_bytes(doc)
    else:
        path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_the_good_document_imports(tmp_path, cli):
    res = cli("fio", "import", _fio_file(tmp_path, GOOD_FIO), "--json")
    row = json.loads(res.out)[0]
    assert res.rc == 0 and row["jobs"] == 2 and row["iops"] == pytest.approx(1250.75)
    assert row["read_clat_p50_us"] == 1.8 and row["errors"] == 0


@pytest.mark.parametrize("name, doc, needle", FIO_CASES, ids=[c[0] for c in FIO_CASES])
def test_hostile_fio_json_is_refused_in_one_line(tmp_path, cli, name, doc, needle):
    cli("fio", "import", _fio_file(tmp_path, doc)).one_line_error(needle)


@pytest.mark.parametrize("kind", SPECIAL_FILES)
def test_special_files_are_refused_without_reading_them(tmp_path, cli, kind):
    path = {"/dev/zero": "/dev/zero", "/dev/null": "/dev/null"}.get(kind, tmp_path / "x.json")
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "symlink-to-zero":
        path.symlink_to("/dev/zero")
    cli("fio", "import", path).one_line_error("cannot read")


# --- sweep files ----------------------------------------------------------------------------------

#: (name, the file's text after ``engine = ...``, engine, what the one line says)
SWEEP_CASES = [
    *[(f"jobs-{t}", f"[axes]\njobs = [{v}]", "des", "jobs[0] must be")
      for t, v in (("neg", "-1"), ("zero", "0"), ("1e9", "1000000000"), ("word", '"four"'),
                   ("frac", "1.5"), ("bool", "true"), ("huge", "9" * 400))],
    ("jobs-twice", "[axes]\njobs = [1, 1]", "des", "lists 1 more than once"),
    ("jobs-empty-axis", "[axes]\njobs = []", "des", "axes.jobs must hold at least 1 item"),
    ("jobs-not-a-list", "[axes]\njobs = 4", "des", "axes.jobs"),
    ("queues-zero", "[fixed]\nqueues = 0", "des", "queues must be between 1 and 1024"),
    ("vcpus-huge", "[fixed]\nvcpus = 100000", "des", "vcpus must be between 1 and 1024"),
    ("iodepth-1e9", "[fixed]\niodepth = 1000000000", "des", "iodepth must be between"),
    ("duration-nan", "[fixed]\nduration = nan", "des", "duration_s must be finite"),
    ("duration-inf", "[fixed]\nduration_s = inf", "des", "duration_s must be finite"),
    ("duration-1e308", "[fixed]\nduration = 1e308", "des", "at most 1000"),
    ("duration-zero", "[fixed]\nduration = 0", "des", "duration_s must be > 0"),
    ("duration-both-names", "[fixed]\nduration = 1\nduration_s = 1", "des", "same setting"),
    ("warmup-neg", "[fixed]\nwarmup = -1", "des", "warmup_s must be >= 0"),
    ("mode-xq", '[fixed]\nmode = "xq"', "des", "mode must be 'sq', 'mq1' or 'mq'"),
    ("mode-native-mq1", '[fixed]\nmode = "mq1"', "native", "mode must be 'sq' or 'mq'"),
    ("rwmixread-150", "[fixed]\nrwmixread = 150", "des", "rwmixread must be >= 0 and at most 100"),
    ("bssplit-bad", '[fixed]\nbssplit = "4k/50"', "des", "bssplit"),
    ("bssplit-number", "[fixed]\nbssplit = 4", "des", "bssplit must be a string"),
    ("null-ns-nan", "[fixed]\nnull_ns = nan", "des", "null_ns must be finite"),
    ("cost-string", '[fixed]\nsubmit_ns = "fast"', "des", "submit_ns must be a number"),
    ("cost-bool", "[fixed]\nsubmit_ns = true", "des", "submit_ns must be a number"),
    ("lock-mcs-half", "[axes]\nlock_mcs = [0, 0.5]", "des", "lock_mcs[1] must be true or false"),
    ("pcpus-half", "[fixed]\npcpus = 0.5", "des", "pcpus must be an integer"),
    ("ring-order-99", "[axes]\nring_page_order = [99]", "des", "between 0 and 4"),
    ("native-device-nvme", '[fixed]\ndevice = "nvme"', "native", "device must be 'null' or"),
    ("native-lock-spin", '[fixed]\nlock = "spin"', "native", "lock must be"),
    ("native-queues-over-vcpus", "[fixed]\nqueues = 8\nvcpus = 4", "native",
     "8 queues exceed the 4 vCPUs"),
    ("native-cost", "[fixed]\nsubmit_ns = 1000", "native", "not a setting of the native"),
    ("unknown-setting", "[fixed]\nspeed = 11", "des", "'speed' is not a setting"),
    ("seed-axis-and-seeds", "seeds = 2\n[axes]\nseed = [1, 2]", "des", "seeds = 2 beside"),
    ("seeds-zero", "seeds = 0", "des", "seeds must be between 1 and 1000"),
    ("seeds-str", 'seeds = "10"', "des", "seeds must be an integer"),
    ("fixed-and-axis", "[fixed]\njobs = 1\n[axes]\njobs = [2]", "des", "both fixed and an axis"),
    ("out-number", "out = 5", "des", "out must be a string"),
    ("out-suffix", 'out = "x.txt"', "des", "must end in .csv or .parquet"),
    ("out-no-folder", 'out = "/nonexistent/dir/x.csv"', "des", "does not exist"),
    ("out-fifo", 'out = "FIFO.csv"', "des", "not a regular file"),
    ("params-native", 'params = "p.json"', "native", "params (a cost file) is for the des"),
    ("params-missing", 'params = "missing.json"', "des", "cannot read"),
    ("unknown-top-key", "speed = 11", "des", "unknown setting 'speed'"),
    ("name-bad", 'name = "a b/c"', "des", "name"),
    ("too-many-points", "seeds = 1000\n[axes]\njobs = [" + ",".join(map(str, range(1, 201)))
     + "]", "des", "exceed the limit"),
]


@pytest.mark.parametrize("name, body, engine, needle", SWEEP_CASES,
                         ids=[c[0] for c in SWEEP_CASES])
def test_hostile_sweep_files_are_refused_before_anything_starts(tmp_path, cli, monkeypatch,
                                                                 name, body, engine, needle):
    monkeypatch.chdir(tmp_path)
    os.mkfifo(tmp_path / "FIFO.csv")
    (tmp_path / "p.json").write_text("{}")
    path = tmp_path / "s.toml"
    path.write_text(f'engine = "{engine}"\n{body}\n')
    cli("sweep", path, "--serial").one_line_error(needle)
    assert not (tmp_path / "x.csv").exists()


def test_sweep_file_out_in_a_read_only_folder(tmp_path, cli):
    if os.geteuid() == 0:
        pytest.skip("root may write to any folder")
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    path = tmp_path / "s.toml"
    path.write_text(f'engine = "des"\nout = "{ro / "x.csv"}"\n')
    cli("sweep", path, "--serial").one_line_error("permission denied")


# --- parameter files ------------------------------------------------------------------------------

#: (name, JSON text, what the one line says)
PARAMS_CASES = [
    ("400-digit-int", '{"pcpus": ' + "9" * 400 + "}", "pcpus must be between 0 and 256"),
    ("5000-digit-int", '{"pcpus": ' + "9" * 5000 + "}", "thousands of digits"),
    ("pcpus-half", '{"pcpus": 0.5}', "pcpus must be an integer, not 0.5"),
    ("pcpus-neg", '{"pcpus": -1}', "pcpus must be between 0 and 256"),
    ("lock-mcs-half", '{"lock_mcs": 0.5}', "lock_mcs must be true or false"),
    ("lock-mcs-2", '{"lock_mcs": 2}', "lock_mcs must be true or false"),
    ("lock-mcs-word", '{"lock_mcs": "yes"}', "lock_mcs must be true or false"),
    ("ring-order-frac", '{"ring_page_order": 1.5}', "ring_page_order must be an integer"),
    ("ring-order-5", '{"ring_page_order": 5}', "ring_page_order must be between 0 and 4"),
    ("placements-0", '{"placements": 0}', "placements must be between 1 and 1024"),
    ("dom0-str", '{"dom0_vcpus": "16"}', "dom0_vcpus must be an integer"),
    ("cost-bool", '{"submit_ns": true}', "submit_ns must be a number, not True"),
    ("cost-str", '{"submit_ns": "6000"}', "submit_ns must be a number"),
    ("cost-nan", '{"submit_ns": NaN}', "submit_ns must be finite"),
    ("cost-inf", '{"submit_ns": Infinity}', "submit_ns must be finite"),
    ("cost-neg", '{"submit_ns": -1}', "submit_ns must be >= 0"),
    ("cost-huge", '{"submit_ns": 1e300}', "submit_ns must be >= 0 and at most 50000"),
    ("cost-null", '{"submit_ns": null}', "submit_ns must be a number"),
    ("cost-list", '{"submit_ns": [1]}', "submit_ns must be a number"),
    ("quantum-zero", '{"quantum_ns": 0}', "quantum_ns must be >= 100000"),
    ("unknown", '{"submitns": 5}', "unknown parameter(s): submitns"),
    ("top-list", "[1, 2]", "expected a table"),
    ("params-not-table", '{"params": 5}', "expected a table"),
    ("nested-deep", '{"a":' * 50_000 + "1" + "}" * 50_000, "nested too deeply"),
    ("not-json", "{submit_ns: 5", "not valid JSON"),
    ("empty", "", "not valid JSON"),
]


@pytest.mark.parametrize("name, text, needle", PARAMS_CASES, ids=[c[0] for c in PARAMS_CASES])
def test_hostile_parameter_files_are_refused_before_a_kernel_compiles(tmp_path, cli, name,
                                                                       text, needle):
    path = tmp_path / "p.json"
    path.write_text(text)
    cli("simulate", "--jobs", "1", "--duration", "0.001", "--params", path).one_line_error(
        needle)


def test_switches_and_counts_are_typed_and_old_float_files_still_load(tmp_path):
    """Older calibrations wrote counts as floats (``16.0``) and switches as 1.0/0.0: read as
    the integers and booleans they are; the engine's record sees the same numbers."""
    from xbq.engines.des.params import DesParams, load_params

    path = tmp_path / "old.json"
    path.write_text(json.dumps({"params": {"dom0_vcpus": 16.0, "lock_mcs": 1.0,
                                           "placements": 64.0, "submit_ns": 12000}}))
    p = load_params(path)
    assert (p.dom0_vcpus, p.lock_mcs, p.placements, p.submit_ns) == (16, True, 64, 12000.0)
    assert type(p.dom0_vcpus) is int and type(p.lock_mcs) is bool
    rec = p.to_record()
    assert float(rec["lock_mcs"][0]) == 1.0 and float(rec["dom0_vcpus"][0]) == 16.0
    assert DesParams(**p.to_dict()) == p


def test_corpus_sizes():
    """How many hostile inputs of each kind the tests above try (the closing note quotes
    these); every one of them is refused in one line."""
    sizes = {"fio JSON": len(FIO_CASES) + len(SPECIAL_FILES), "sweep files": len(SWEEP_CASES),
             "parameter files": len(PARAMS_CASES)}
    assert sizes["fio JSON"] >= 70 and sizes["sweep files"] >= 40
    assert sizes["parameter files"] >= 25
    assert math.prod(sizes.values()) > 0
