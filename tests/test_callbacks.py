"""Trainer callbacks and metrics writers (kdrepro.callbacks): a CSV row and TensorBoard scalars per epoch, phase
changes with their pool sizes, plain progress lines off a terminal; none of it enters the run id."""
from __future__ import annotations

import csv
import math

import pytest
import torch

from kdrepro import callbacks
from kdrepro.config import ConfigError, RunConfig
from kdrepro.runs import RunStore, read_metrics

BASE = dict(dataset="digits", model="resnet8", epochs=8, batch_size=128, crop_padding=1, hflip=False, num_threads=1,
            method="slkd", teacher=dict(model="resnet8", epochs=1))


class Recorder(callbacks.TrainerCallback):
    def __init__(self):
        self.phases, self.epochs, self.ends = [], [], []

    def on_phase(self, trainer, phase, pool_size):
        self.phases.append((phase.index, phase.fraction, pool_size))

    def on_epoch(self, trainer, row):
        self.epochs.append(dict(row))

    def on_end(self, trainer, summary):
        self.ends.append(summary["run_id"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("results"))
    cfg = RunConfig.from_dict({**BASE, "metrics_writers": ["csv", "tensorboard"], "log_every": 3})
    lines, rec = [], Recorder()
    result = store.run(cfg, log=lines.append, callbacks=[rec])
    return result, lines, rec


def test_runtime_fields_stay_out_of_the_run_id():
    plain = RunConfig.from_dict(BASE).resolved()
    logged = RunConfig.from_dict({**BASE, "metrics_writers": ["tensorboard", "csv"], "log_every": 5}).resolved()
    assert plain.run_id == logged.run_id
    assert plain.teacher_config().run_id == logged.teacher_config().run_id


def test_a_callback_sees_every_phase_with_its_pool_and_every_epoch(trained):
    result, _, rec = trained
    from kdrepro.data import load_dataset

    counts = torch.bincount(load_dataset("digits", train=True).targets).tolist()
    # the authors' pacing at 8 epochs: warm-up, then 20/40/60/80/100 % of every class
    fractions = [1.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert rec.phases == [(i, f, sum(math.ceil(round(f * n, 9)) for n in counts)) for i, f in enumerate(fractions)]
    assert rec.epochs == read_metrics(result.run_dir)
    assert rec.ends == [result.run_id]


def test_the_csv_file_has_one_row_per_epoch(trained):
    result, _, _ = trained
    with open(result.run_dir / callbacks.CSV_FILE, newline="") as f:
        rows = list(csv.DictReader(f))
    metrics = read_metrics(result.run_dir)
    assert [int(r["epoch"]) for r in rows] == list(range(1, 9))
    for row, m in zip(rows, metrics):
        assert float(row["test_top1"]) == m["test_top1"] and int(row["pool_size"]) == m["pool_size"]
        assert (row["train_mse"] == "") == ("train_mse" not in m)  # the MSE part exists in curriculum phases only


def test_tensorboard_event_files_hold_the_per_epoch_metrics(trained):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result, _, _ = trained
    acc = EventAccumulator(str(result.run_dir / callbacks.TENSORBOARD_DIR))
    acc.Reload()
    metrics = read_metrics(result.run_dir)
    for key in ("test_top1", "train_loss", "pool_size", "lr", "phase"):
        events = acc.Scalars(key)
        assert [e.step for e in events] == list(range(1, 9))
        assert [e.value for e in events] == pytest.approx([m[key] for m in metrics], rel=1e-6)
    assert [(e.step, e.value) for e in acc.Scalars("phase_start")] == [(1, 0), (2, 1), (3, 2), (4, 3), (5, 4), (6, 5)]
    assert [e.value for e in acc.Scalars("phase")] == [m["phase"] for m in metrics]


def test_off_a_terminal_a_plain_line_every_n_epochs(trained):
    result, lines, _ = trained
    progress = [line for line in lines if line.startswith(f"{result.run_id}: epoch ")]
    assert [line.split()[2] for line in progress] == ["3/8", "6/8", "8/8"]
    assert all("\r" not in line and "test top-1" in line and "pool" in line for line in progress)


def test_tensorboard_missing_is_skipped_with_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(callbacks._AVAILABLE, "tensorboard", lambda: False)
    lines = []
    writers = callbacks.metrics_writers_for(("csv", "tensorboard"), tmp_path, lines.append)
    assert [type(w) for w in writers] == [callbacks.CSVWriter]
    assert lines == ["metrics writer 'tensorboard' skipped: tensorboard is not installed "
                     "(pip install 'kdrepro[tensorboard]')"]


def test_an_unknown_writer_is_named():
    """The writer names are a component's registry: resolution checks them (the config checks the shape)."""
    cfg = RunConfig.from_dict({**BASE, "metrics_writers": ["wandb"]})
    with pytest.raises(ConfigError, match=r"^metrics_writers: unknown writer 'wandb'; choose from csv, tensorboard$"):
        cfg.resolved()
    with pytest.raises(ConfigError, match=r"metrics_writers.*must be a list of writer names"):
        RunConfig.from_dict({**BASE, "metrics_writers": {"csv": 1}})


def test_the_cli_offers_the_registered_writers():
    from kdrepro.cli import make_parser

    parser = make_parser()
    train = next(a for a in parser._subparsers._group_actions[0].choices["train"]._actions
                 if a.dest == "metrics_writer")
    assert tuple(train.choices) == callbacks.METRICS_WRITERS.names()
