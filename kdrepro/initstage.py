"""The initialisation stages of loss terms (AB, FT, FSP: RepDistiller's ``helper/pretrain.py: init``), run
as part of a run before its first epoch.

Each active term whose :meth:`~kdrepro.terms.LossTerm.init_epochs` is positive gets, in summation order,
that many epochs over the whole training set (the run's batches and augmentation, drawn from the run's
generator) with its own SGD optimizer over :meth:`~kdrepro.terms.LossTerm.init_parameters` (the run's
momentum, Nesterov flag and weight decay; the term's ``init_lr`` or the run's lr; no schedule), minimising
:meth:`~kdrepro.terms.LossTerm.init_loss`. The teacher runs in eval mode without gradient, the student
in training mode (so its BatchNorm statistics move, as RepDistiller's ``init_modules.train()``).

Resumable: after every stage epoch the state (student, terms, the stage optimizer, the RNGs and the
losses so far) is saved atomically to ``checkpoints/init.pt``; an interrupted run continues from there,
and a run that has a main-phase checkpoint (``latest.pt``) skips the stages. The stages' losses and
times go into the run's summary under ``init``.
"""
from __future__ import annotations

import math
import time

import torch

from .terms import StepInputs


class StageDiverged(RuntimeError):
    """An initialisation stage's loss became NaN or infinite (the engine records the run as diverged);
    ``where`` names the stage and its epoch."""

    def __init__(self, message: str, where: str = "the initialisation stage"):
        super().__init__(message)
        self.where = where


def _path(trainer):
    return trainer.run.path / "checkpoints" / "init.pt"


def _state(trainer, stage: int, epochs: int, optimizer, record: list) -> dict:
    return {"stage": stage, "epochs": epochs, "record": record, "model": trainer.student.state_dict(),
            "terms": {name: term.state_dict() for name, term in trainer.terms.items()},
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "rng_torch": torch.get_rng_state(), "rng_generator": trainer.generator.get_state()}


def _restore(trainer, state: dict) -> None:
    trainer.student.load_state_dict(state["model"])
    for name, term in trainer.terms.items():
        term.load_state_dict(state["terms"][name])
    torch.set_rng_state(state["rng_torch"].cpu())
    trainer.generator.set_state(state["rng_generator"].cpu())


def _epoch(trainer, term, optimizer, epoch: int) -> float:
    phase = trainer.schedule[0]
    chunks, views_all, _ = trainer.epoch_plan(torch.arange(len(trainer.train_set)), phase)
    trainer.student.train()
    total, seen, start = torch.zeros((), dtype=torch.float64, device=trainer.device), 0, 0
    for chunk in chunks:
        n = len(chunk)
        idx = chunk.to(trainer.device)
        views = views_all[start:start + n].to(trainer.device)
        start += n
        x = trainer.train_set.normalize(trainer.augment.apply(trainer.images[idx], views, check=False))
        with torch.no_grad():
            _, t_feats = trainer.teacher(x, return_features=True)
        with trainer.autocast:
            s_logits, s_feats = (trainer.student(x, return_features=True) if term.init_reads_student
                                 else (None, None))
            step = StepInputs(student_logits=s_logits, targets=trainer.targets[idx], indices=idx, images=x,
                              epoch=epoch, curriculum=False, student_features=s_feats, teacher_features=t_feats)
            loss = term.init_loss(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach().double() * n
        seen += n
    return total.item() / seen


def run_init_stages(trainer) -> dict | None:
    """Run (or finish) the initialisation stages of ``trainer``'s terms; return the summary's ``init`` record
    (``None`` when no term has a stage)."""
    staged = [(name, term) for name, term in trainer.terms.items() if term.init_epochs() > 0]
    if not staged:
        return None
    path = _path(trainer)
    if trainer.run.latest.exists():  # the main phase has begun: the stages are done
        return trainer.run.load(path)["record"] if path.exists() else None
    cfg = trainer.cfg
    stage, done, record, saved_opt = 0, 0, [], None
    if path.exists():
        state = trainer.run.load(path, map_location=trainer.device)
        _restore(trainer, state)
        stage, done, record, saved_opt = state["stage"], state["epochs"], state["record"], state["optimizer"]
        trainer.log(f"resuming the initialisation stages at stage {stage + 1}, after epoch {done}")
    for index, (name, term) in enumerate(staged):
        if index < stage:
            continue
        lr = getattr(term.params, "init_lr", None) or cfg.lr
        optimizer = torch.optim.SGD(term.init_parameters(trainer.student), lr=lr, momentum=cfg.momentum,
                                    nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
        if index == stage and saved_opt is not None and done > 0:
            optimizer.load_state_dict(saved_opt)
        first = done if index == stage else 0
        for epoch in range(first, term.init_epochs()):
            t0 = time.perf_counter()
            loss = _epoch(trainer, term, optimizer, epoch + 1)
            if not math.isfinite(loss):
                raise StageDiverged(f"the initialisation stage of {name!r} diverged in its epoch {epoch + 1} "
                                    f"(loss {loss}); nothing of this epoch was saved. Lower init_lr.",
                                    where=f"the initialisation stage of {name!r} (its epoch {epoch + 1})")
            record.append({"term": name, "epoch": epoch + 1, "loss": loss, "lr": lr,
                           "seconds": round(time.perf_counter() - t0, 3)})
            trainer.run.save(_state(trainer, index, epoch + 1, optimizer, record), path)
            trainer.log(f"{name} initialisation: epoch {epoch + 1}/{term.init_epochs()}, loss {loss:.4f}")
        stage, done = index + 1, 0
        trainer.run.save(_state(trainer, stage, 0, None, record), path)
    return record
