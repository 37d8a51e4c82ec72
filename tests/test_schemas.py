"""The JSON Schemas of the files xbq reads come from the same typed models that check them:
the committed copies in docs/schemas/ are what ``xbq schema`` prints, and an editor that
validates with them accepts the kit's own files and refuses what xbq refuses."""

import json
import tomllib
from pathlib import Path

import jsonschema
import pytest

from xbq.cli.schema import KINDS, schema

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "schemas"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_committed_schemas_are_the_models(kind):
    committed = json.loads((DOCS / f"{kind}.schema.json").read_text())
    assert committed == json.loads(json.dumps(schema(kind))), \
        f"docs/schemas/{kind}.schema.json is stale: xbq schema {kind} > it"
    jsonschema.Draft202012Validator.check_schema(committed)


def _validator(kind):
    return jsonschema.Draft202012Validator(schema(kind))


def test_the_kits_own_files_validate():
    assert _validator("params").is_valid(json.loads(
        (ROOT / "data/calibrated/des-params.json").read_text()))
    assert _validator("fio").is_valid(json.loads(
        (ROOT / "data/examples/fio-iometer-null.json").read_text()))
    sweep = tomllib.loads('engine = "des"\nseeds = 2\n[fixed]\nduration_s = 0.05\n'
                          '[axes]\nmode = ["sq", "mq"]\njobs = [1, 4]\nlock_mcs = [false, true]\n')
    assert _validator("sweep").is_valid(sweep)


@pytest.mark.parametrize("kind, doc", [
    ("params", {"pcpus": 0.5}), ("params", {"lock_mcs": 0.5}), ("params", {"typo_ns": 1}),
    ("params", {"submit_ns": 1e12}),
    ("sweep", {"engine": "des", "axes": {"jobs": [0]}}),
    ("sweep", {"engine": "native", "fixed": {"device": "nvme"}}),
    ("sweep", {"engine": "des", "axes": {"jobs": [1, 1]}}),
    ("sweep", {"engine": "gpu"}),
    ("fio", {"jobs": []}), ("fio", {"jobs": [{"jobname": 5, "read": {"iops": 1},
                                              "write": {"iops": 1}}]}),
])
def test_what_xbq_refuses_the_schema_refuses(kind, doc):
    assert not _validator(kind).is_valid(doc)
