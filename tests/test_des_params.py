"""Cost parameters: units, bounds, files, one-line errors."""

import json
from pathlib import Path

import pytest

from xbq.engines.des.params import FIELDS, DesParams, describe, load_params, textbook
from xbq.errors import XbqError


def test_every_parameter_is_documented_with_unit_and_bounds():
    for d in describe():
        assert d["doc"] and d["min"] <= d["default"] <= d["max"], d["name"]
        assert d["name"].endswith("_ns") == (d["unit"] == "ns") == (d["kind"] == "cost")
        assert isinstance(d["default"], {"cost": float, "switch": bool, "count": int}[d["kind"]])
    rec = DesParams(submit_ns=1234.5).to_record()
    assert rec.dtype.names == FIELDS and float(rec["submit_ns"][0]) == 1234.5


def test_load_toml_and_json(tmp_path):
    t = tmp_path / "p.toml"
    t.write_text("submit_ns = 7000\nlock_mcs = 1\n")
    p = load_params(t)
    assert p.submit_ns == 7000.0 and p.lock_mcs is True and p.fe_cs_ns == DesParams().fe_cs_ns
    j = tmp_path / "p.json"
    j.write_text(json.dumps({"params": {"be_req_ns": 2500.0}, "points": []}))
    assert load_params(j).be_req_ns == 2500.0


@pytest.mark.parametrize("text,msg", [
    ('{"submitns": 5}', "unknown parameter"),
    ('{"submit_ns": 1e12}', "submit_ns must be >= 0 and at most 50000"),
    ('{"submit_ns": "fast"}', "submit_ns must be a number, not 'fast'"),
    ("{not json", "not valid JSON"),
])
def test_bad_files_give_one_line_errors(tmp_path, text, msg):
    f = tmp_path / "p.json"
    f.write_text(text)
    with pytest.raises(XbqError, match=msg) as exc:
        load_params(f)
    assert "\n" not in str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(XbqError, match="cannot read"):
        load_params(tmp_path / "nope.json")


def test_textbook_zeroes_every_cost():
    p = textbook(ssd_base_ns=5.0)
    assert p.submit_ns == 0.0 and p.evtchn_latency_ns == 0.0 and p.ssd_base_ns == 5.0
    assert p.quantum_ns == DesParams().quantum_ns


def test_docs_list_every_parameter():
    text = (Path(__file__).resolve().parent.parent / "docs" / "des.md").read_text()
    missing = [n for n in FIELDS if f"| `{n}` |" not in text]
    assert not missing, f"docs/des.md does not describe {missing}"
