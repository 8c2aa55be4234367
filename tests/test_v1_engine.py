"""The engine of this version computes exactly what kdrepro 0.1's did (issues 12 and 13).

``tests/data/v1_engine/`` holds the ``config.json`` (schema 1) and ``metrics.jsonl`` of seven small runs on
the embedded digits that kdrepro 0.1 trained (commit 1d91e2e, CPU, one thread): a resnet14 teacher, and
resnet8 students with attention transfer, FitNets, SLKD with the authors' defaults, SLKD with both of
the authors' quirks, SLKD scored by the teacher's KL in random order, and SLKD with linear pacing on
seed 1. Each config is migrated (:mod:`kdrepro.migrate`) and trained again by today's engine (loss terms
as components, the epoch's batches drawn at its start, loss sums accumulated on the device): every
number of every epoch must be equal, except the wall-clock times.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdrepro.config import RunConfig
from kdrepro.migrate import v1_run_id, v1_to_v2
from kdrepro.runs import RunStore

FIXTURES = Path(__file__).resolve().parent / "data" / "v1_engine"
TIMES = {"train_seconds", "wall_seconds"}
RUNS = sorted(p.name for p in FIXTURES.iterdir())


def _rows(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMES} for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return RunStore(tmp_path_factory.mktemp("v1"))


@pytest.mark.slow
@pytest.mark.parametrize("name", RUNS)
def test_todays_engine_repeats_every_epoch_of_kdrepro_0_1(name, store):
    old = json.loads((FIXTURES / name / "config.json").read_text())
    assert v1_run_id(old) == name  # the fixture is what 0.1 stored under that id
    cfg = RunConfig.from_dict(v1_to_v2(old)).resolved()
    result = store.run(cfg, log=lambda m: None)
    assert _rows(result.run_dir / "metrics.jsonl") == _rows(FIXTURES / name / "metrics.jsonl")
