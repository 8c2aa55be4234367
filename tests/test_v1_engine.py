"""The engine of this version computes exactly what kdrepro 0.1's did (issues 12 and 13).

``tests/data/v1_engine/`` holds the ``config.json`` (schema 1) and ``metrics.jsonl`` of seven small runs on
the embedded digits that kdrepro 0.1 trained (commit 1d91e2e, CPU, one thread): a resnet14 teacher, and
resnet8 students with attention transfer, FitNets, SLKD with the authors' defaults, SLKD with both of
the authors' quirks, SLKD scored by the teacher's KL in random order, and SLKD with linear pacing on
seed 1. Each config is migrated (:mod:`kdrepro.migrate`) and trained again by today's engine (loss terms
as components, the epoch's batches drawn at its start, loss sums accumulated on the device): every
number of every epoch must be equal, except the wall-clock times.

CPU training is bit-exact on one CPU model, not across models (results/superseded/cpu300-teacher-a/): the
same code gives other numbers from the first epoch on elsewhere. So 0.1's numbers are kept per machine
(``machines.json``: metrics file -> the CPU they were made on, as ``"<cpu_name()> (<cpu_model()>)"`` of
:mod:`kdrepro.engine`: two CPUs of one model name can round differently, so the family, model and vector
extension are part of a machine's identity;
``README.md`` there says how to record a machine). Today's numbers must equal those of one recorded
machine, and must equal this machine's when it is recorded; on an unrecorded machine the schedule (phases,
pool sizes, learning rates, iterations, images) is still compared exactly and the numbers are skipped, with
the reason.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdrepro.config import RunConfig
from kdrepro.engine import cpu_model, cpu_name
from kdrepro.migrate import v1_run_id, v1_to_v2
from kdrepro.runs import RunStore

FIXTURES = Path(__file__).resolve().parent / "data" / "v1_engine"
TIMES = {"train_seconds", "wall_seconds"}
RUNS = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())
MACHINES: dict[str, str] = json.loads((FIXTURES / "machines.json").read_text())
#: what does not depend on floating-point rounding: the schedule and the curriculum's pool sizes
SCHEDULE = ("epoch", "phase", "curriculum", "pool_size", "lr", "iterations", "images_seen")


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
    today = _rows(result.run_dir / "metrics.jsonl")
    recorded = {f: _rows(FIXTURES / name / f) for f in MACHINES}
    for rows in recorded.values():
        assert [{k: r.get(k) for k in SCHEDULE} for r in today] == [{k: r.get(k) for k in SCHEDULE} for r in rows]
    if any(rows == today for rows in recorded.values()):
        return
    machine = f"{cpu_name()} ({cpu_model()})"
    here = [f for f, recorded_on in MACHINES.items() if recorded_on == machine]
    assert not here, f"on {machine}, today's engine no longer repeats kdrepro 0.1's numbers ({here[0]})"
    pytest.skip(f"kdrepro 0.1's numbers are not recorded for this CPU ({machine}); the schedule matched. "
                "Record them: tests/data/v1_engine/README.md")
