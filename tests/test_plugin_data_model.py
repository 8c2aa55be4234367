"""A plugin adds a data set and a network (kdrepro.data.register_dataset, kdrepro.models.register_model),
each one small file's registration, with typed options; runs train with them through the stock command's
``reproduce --jobs 2`` workers (fresh processes that load the plugin named by ``--plugin``)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from kdrepro import plugins

PLUGIN = '''
"""Three classes of 8x8 grey images (class c: a bright band in rows 2c..2c+1, plus noise) and a tiny CNN."""
import os

import numpy as np
import torch
from torch import nn

from kdrepro.data import DataOptions, ImageDataset, register_dataset
from kdrepro.models import ModelOptions, register_model
from kdrepro.values import PositiveInt


class BandsOptions(DataOptions):
    per_class: PositiveInt = 40


@register_dataset("toy-bands", BandsOptions, num_classes=3)
def load_bands(roots, train, download, per_class=40):
    marks = os.environ.get("KDREPRO_TOY_MARKS")
    if marks:  # which processes loaded it
        open(os.path.join(marks, f"data-{os.getpid()}"), "w").close()
    rng = np.random.default_rng(0 if train else 1)
    y = np.repeat(np.arange(3), per_class)
    x = rng.integers(0, 60, size=(len(y), 1, 8, 8))
    for i, c in enumerate(y):
        x[i, 0, 2 * c:2 * c + 2, :] += 180
    return ImageDataset("toy-bands", torch.from_numpy(x.astype(np.uint8)), torch.from_numpy(y.astype(np.int64)),
                        ["top", "middle", "bottom"], (0.3,), (0.3,))


class TinyOptions(ModelOptions):
    width: PositiveInt = 4


@register_model("tiny_cnn", TinyOptions)
def tiny_cnn(num_classes, in_channels, width=4):
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d((4, 1)),
                         nn.Flatten(), nn.Linear(4 * width, num_classes))
'''


@pytest.fixture
def plugin(tmp_path):
    (tmp_path / "plug").mkdir()
    (tmp_path / "plug" / "kdrepro_toy_plugin.py").write_text(textwrap.dedent(PLUGIN))
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {k: v for k, v in os.environ.items() if k != plugins.ENV}
    env.update(PYTHONPATH=os.pathsep.join([str(tmp_path / "plug"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               KDREPRO_TOY_MARKS=str(marks), PYTHONUNBUFFERED="1")
    return env, marks


def _kdrepro(env, *args):
    return subprocess.run([sys.executable, "-m", "kdrepro", *args], capture_output=True, text=True, env=env)


@pytest.mark.slow
def test_a_plugins_data_set_and_network_train_through_reproduce_workers(plugin, tmp_path):
    env, marks = plugin
    profile = tmp_path / "toy.yaml"
    profile.write_text(yaml.safe_dump({
        "name": "toy", "datasets": ["toy-bands"], "seeds": [0], "dataset_options": {"toy-bands": {"per_class": "30"}},
        "base": {"epochs": 2, "num_threads": 1, "progress": False, "teacher_cache": False, "crop_padding": 1,
                 "batch_size": 16, "curriculum": {"pacing": "linear", "pacing_options": {"num_phases": 1, "warmup": 1}}},
        "pairs": [{"teacher": {"model": "tiny_cnn", "model_options": {"width": 8}, "epochs": 1}, "student": "tiny_cnn"}],
    }))
    proc = _kdrepro(env, "--plugin", "kdrepro_toy_plugin", "reproduce", "--profile", str(profile),
                    "--results", str(tmp_path / "results"), "--jobs", "2", "--train-only")
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    runs = [d for d in (tmp_path / "results" / "runs").iterdir() if d.is_dir()]
    assert len(runs) == 4  # the teacher, vanilla, KD and SLKD
    widths = {}
    for d in runs:
        cfg = json.loads((d / "config.json").read_text())
        summary = json.loads((d / "summary.json").read_text())
        assert cfg["dataset"] == "toy-bands" and cfg["dataset_options"] == {"per_class": 30}  # typed: "30" -> 30
        assert cfg["model"] == "tiny_cnn" and summary["num_classes"] == 3
        assert summary["epochs"] == cfg["epochs"] == len((d / "metrics.jsonl").read_text().splitlines())
        first_conv = torch.load(d / "weights.pt", map_location="cpu")["0.weight"]
        widths[d.name] = (cfg["model_options"], first_conv.shape[0])
    # the teacher's option reached its network: 8 channels; the students take the default 4
    assert sorted(widths.values(), key=lambda w: w[1]) == [({}, 4)] * 3 + [({"width": 8}, 8)]
    # the workers, not this process, loaded the data set
    loaded_by = {p.name for p in marks.iterdir()}
    assert loaded_by and f"data-{os.getpid()}" not in loaded_by
    # without the plugin the stock command refuses the data set in one line
    proc = _kdrepro(env, "train", "--set", "dataset=toy-bands", "--set", "model=resnet8", "--dry-run",
                    "--results", str(tmp_path / "results"))
    assert proc.returncode == 2 and "dataset='toy-bands': choose one of" in proc.stderr.strip().splitlines()[-1]
