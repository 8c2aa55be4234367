"""Published checkpoint layouts load with equal logits; damaged files give one line naming the file.

Each file is built here from a kdrepro model's own state dict, renamed to the key names and wrapped in the
dicts that the published code writes:

* the SLKD authors (github.com/HaoranZhao1988/kd, ``network.py``/``train_baseline.py``/``train_slkd.py``):
  ``DataParallel`` keys ``module.conv1.weight``, ``module.res1.0.conv1.weight``, ``module.res2.0.ds.0.weight``,
  in ``{'epoch', 'net'}`` (teacher) and ``{'epoch', 'snet', 'tnet'}`` (student);
* RepDistiller (``train_teacher.py``/``train_student.py``): ``ckpt_epoch_240.pth`` ``{'epoch', 'model',
  'accuracy', 'optimizer'}``, ``*_best.pth`` ``{'epoch', 'model', 'best_acc'}``, ``*_last.pth`` ``{'opt':
  argparse.Namespace, 'model', 'optimizer'}``;
* mdistiller (``engine/trainer.py``): ``student_best`` ``{'model'}`` and ``latest`` ``{'epoch', 'model':
  DataParallel(distiller) state dict with module.student.* / module.teacher.*, 'optimizer', 'best_acc'}``.
"""
from __future__ import annotations

import argparse
import os
import re
import zipfile

import pytest
import torch

from kdrepro.cli import main
from kdrepro.models import (CheckpointFileError, CheckpointMismatchError, CheckpointReadError, create_model,
                            load_weights)


def _trained(name: str, num_classes: int = 100, seed: int = 0):
    """A model with random, non-default weights and BN statistics (so that a wrong mapping shows)."""
    torch.manual_seed(seed)
    model = create_model(name, num_classes)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _authors_keys(state: dict) -> dict:
    """kdrepro's keys as the authors' DataParallel network names them (their network.py)."""
    out = {}
    for key, value in state.items():
        key = re.sub(r"^layer([1-3])\.", r"res\1.", key).replace(".downsample.", ".ds.")
        out["module." + key] = value
    return out


def _optimizer_state(model) -> dict:
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    model.zero_grad()
    return opt.state_dict()


def _logits_equal(source, name: str, path, num_classes: int = 100, **kw) -> None:
    loaded = create_model(name, num_classes)
    load_weights(loaded, path, **kw)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), source.eval()(x))


def test_authors_teacher_file_loads_with_equal_logits(tmp_path):
    teacher = _trained("resnet110")
    net = _authors_keys(teacher.state_dict())
    # the published names (network.py: conv1/bn1, res1..res3 of resblocks, ds for the shortcut, fc)
    for key in ("module.conv1.weight", "module.res1.17.bn2.running_var", "module.res2.0.ds.0.weight",
                "module.res3.0.ds.1.running_mean", "module.fc.bias"):
        assert key in net
    path = tmp_path / "r110_c100.ckp"
    torch.save({"epoch": 200, "net": net}, path)
    _logits_equal(teacher, "resnet110", path)


def test_authors_student_file_loads_either_network(tmp_path):
    student, teacher = _trained("resnet20", seed=1), _trained("resnet110", seed=2)
    path = tmp_path / "st_r110_r20_200.ckp"
    torch.save({"epoch": 200, "snet": _authors_keys(student.state_dict()),
                "tnet": _authors_keys(teacher.state_dict())}, path)
    _logits_equal(student, "resnet20", path)            # the first that fits: snet
    _logits_equal(teacher, "resnet110", path)           # snet does not fit a resnet110: tnet
    _logits_equal(teacher, "resnet110", path, entry="tnet")
    with pytest.raises(CheckpointMismatchError, match=r"entry 'snet'"):
        load_weights(create_model("resnet110", 100), path, entry="snet")


@pytest.mark.parametrize("layout", ["ckpt_epoch_240.pth", "resnet8x4_best.pth", "resnet8x4_last.pth"])
def test_repdistiller_files_load_with_equal_logits(layout, tmp_path):
    model = _trained("resnet8x4")
    optimizer = _optimizer_state(_trained("resnet8x4"))
    if layout.startswith("ckpt_epoch"):
        obj = {"epoch": 240, "model": model.state_dict(), "accuracy": torch.tensor(72.5), "optimizer": optimizer}
    elif layout.endswith("_best.pth"):
        obj = {"epoch": 231, "model": model.state_dict(), "best_acc": torch.tensor(73.1)}
    else:
        opt = argparse.Namespace(model="resnet8x4", dataset="cifar100", learning_rate=0.05,
                                 lr_decay_epochs=[150, 180, 210], lr_decay_rate=0.1, weight_decay=5e-4,
                                 momentum=0.9, trial="0", save_folder="./save/models/resnet8x4", path_t=None)
        obj = {"opt": opt, "model": model.state_dict(), "optimizer": optimizer}
    path = tmp_path / layout
    torch.save(obj, path)
    _logits_equal(model, "resnet8x4", path)


def test_mdistiller_files_load_with_equal_logits(tmp_path):
    student, teacher = _trained("resnet8x4", seed=3), _trained("resnet32x4", seed=4)
    torch.save({"model": student.state_dict()}, tmp_path / "student_best")
    _logits_equal(student, "resnet8x4", tmp_path / "student_best")
    # the whole distiller, wrapped in DataParallel, with a term's own module (FitNets' connector)
    distiller = {f"module.student.{k}": v for k, v in student.state_dict().items()}
    distiller.update({f"module.teacher.{k}": v for k, v in teacher.state_dict().items()})
    distiller["module.conv_reg.weight"] = torch.zeros(256, 128, 1, 1)
    torch.save({"epoch": 240, "model": distiller, "optimizer": _optimizer_state(_trained("resnet8x4")),
                "best_acc": torch.tensor(75.0)}, tmp_path / "latest")
    _logits_equal(student, "resnet8x4", tmp_path / "latest")
    _logits_equal(teacher, "resnet32x4", tmp_path / "latest")
    _logits_equal(teacher, "resnet32x4", tmp_path / "latest", entry="model/teacher")


def test_a_mismatch_lists_keys_and_shapes_in_a_few_lines(tmp_path):
    path = tmp_path / "r20.ckp"
    torch.save({"epoch": 1, "net": _authors_keys(_trained("resnet20").state_dict())}, path)
    with pytest.raises(CheckpointMismatchError) as err:
        load_weights(create_model("resnet20", 10), path)
    message = str(err.value)
    assert str(path) in message and len(message.splitlines()) <= 4
    assert "fc.weight: file [100, 64] vs model [10, 64]" in message
    with pytest.raises(CheckpointMismatchError) as err:
        load_weights(create_model("resnet32", 100), path)
    assert "missing from the file: layer1.3.conv1.weight" in str(err.value)


def _damaged(kind: str, folder) -> str:
    path = folder / f"{kind}.pth"
    if kind == "text":
        path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "random-zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl", os.urandom(200))
    elif kind == "truncated":
        torch.save({"model": create_model("resnet8", 10).state_dict()}, path)
        path.write_bytes(path.read_bytes()[:5000])
    elif kind == "random-bytes":
        path.write_bytes(os.urandom(500))
    elif kind == "foreign-object":
        torch.save({"model": create_model("resnet8", 10).state_dict(), "fn": os.path.join}, path)
    elif kind == "no-state-dict":
        torch.save({"epoch": 3, "best_acc": 1.0}, path)
    return str(path)


KINDS = ["text", "empty", "random-zip", "truncated", "random-bytes", "foreign-object", "no-state-dict"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_damaged_file_is_one_line_naming_the_file(kind, tmp_path):
    path = _damaged(kind, tmp_path)
    with pytest.raises(CheckpointReadError) as err:
        load_weights(create_model("resnet8", 10), path)
    message = str(err.value)
    assert len(message.splitlines()) == 1 and path in message, message
    assert "\x1b" not in message


@pytest.mark.parametrize("kind", ["text", "empty", "random-zip", "foreign-object", "mismatch"])
def test_the_cli_reports_a_bad_teacher_file_as_a_user_error(kind, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if kind == "mismatch":
        path = str(tmp_path / "r20.ckp")
        torch.save({"epoch": 1, "net": _authors_keys(_trained("resnet20").state_dict())}, path)
    else:
        path = _damaged(kind, tmp_path)
    argv = ["train", "--set", "method=kd", "--set", "dataset=digits", "--set", "epochs=1", "--set",
            "num_threads=1", "--set", "progress=false", "--set", "teacher.model=resnet8",
            "--set", f"teacher_weights={path}", "--results", str(tmp_path / "results")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "probably a bug" not in err and "Traceback" not in err
    first = [line for line in err.splitlines() if line.startswith("kdrepro:")]
    assert len(first) == 1 and path in first[0], err
    assert issubclass(CheckpointReadError, CheckpointFileError)
