"""The configuration reference (``docs/config-reference.md``), generated from the typed schema.

Every key of :class:`kdrepro.config.RunConfig` and :class:`kdrepro.config.CurriculumConfig`, every
registered loss term with its parameter model, every registered score, order and pacing (with the
pacing's options model) and every recipe are read from the code, so the page cannot drift from it.
A field's description is the comment on its line in the class body (or the ``#:`` comment above it).
``python -m kdrepro.config_reference`` rewrites the page; ``tests/test_docs.py`` fails when it is stale.
"""
from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

PAGE = Path(__file__).resolve().parent.parent / "docs" / "config-reference.md"


def _comments(cls: type) -> dict[str, str]:
    """Field name -> the comment on its line in ``cls``'s body, or the ``#:`` lines just above it."""
    out: dict[str, str] = {}
    above: list[str] = []
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return out
    for line in lines:
        s = line.strip()
        if s.startswith("#:"):
            above.append(s[2:].strip())
            continue
        m = re.match(r"(\w+)\s*:[^=]*(?:=.*?)?(?:#\s*(.*))?$", s)
        if m and m.group(1) in getattr(cls, "model_fields", {}):
            out[m.group(1)] = " ".join(above + ([m.group(2).strip()] if m.group(2) else []))
        above = [] if not s.startswith("#") else above
    return out


def _type(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if not getattr(annotation, "__args__", None) else None
    text = text or str(annotation).replace("typing.", "")
    text = re.sub(r"Annotated\[(\w+), [^\]]*\]", r"\1", text)
    text = re.sub(r"^Optional\[(.*)\]$", r"\1 | None", text)
    return re.sub(r"<class '(\w+)'>", r"\1", text).replace("NoneType", "None")


def _default(field) -> str:
    if field.default_factory is not None:
        return f"`{field.default_factory()!r}`"
    return "required" if field.is_required() else f"`{field.default!r}`"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


#: descriptions of the run keys whose line in :class:`kdrepro.config.RunConfig` carries no comment
RUN_KEYS = {
    "dataset": "a registered data set (`kdrepro.data.load_dataset`): digits, cifar10, cifar10-5k, ...",
    "dataset_options": "options of the data set loader, e.g. `path` for `npz` and `imagefolder`",
    "model": "a registered model (`kdrepro.models.list_models()`)",
    "model_options": "options of the model, e.g. `shortcut: pad`",
    "seed": "fixes the initialisation and the data order",
    "recipe": "fills the optimisation fields and loss weights left unset (table below)",
    "epochs": "training epochs; the recipe's milestones and the authors' phase ends scale with it",
    "batch_size": "training batch size", "lr": "initial learning rate (SGD)", "momentum": "SGD momentum, in [0, 1)",
    "nesterov": "Nesterov momentum", "weight_decay": "SGD weight decay",
    "milestones": "epochs at which the learning rate is multiplied by `gamma`",
    "gamma": "learning-rate factor at each milestone",
    "augment": "random crop and horizontal flip while training", "crop_padding": "reflect padding before the crop",
    "hflip": "random horizontal flip", "losses": "loss terms merged onto the method preset (section below)",
    "curriculum": "the sequencer's choices merged onto the preset (section below); `slkd` only",
    "device": "auto, cpu, cuda or cuda:N", "teacher_cache": "read the teacher's logits from the exact cache",
    "compile": "`torch.compile` the student", "channels_last": "NHWC memory format",
    "progress": "progress bars (None: when the output is a terminal)",
    "data_root": "where data sets are looked for first (then `$KDREPRO_DATA`, then `./data`)",
    "num_threads": "torch threads of the run (None: torch's default)",
}


def _fields_table(model: type[BaseModel], prefix: str = "") -> list[str]:
    from .config import RunConfig

    notes = dict(RUN_KEYS) if model is RunConfig else {}
    for klass in reversed(model.__mro__):
        if isinstance(klass, type) and issubclass(klass, BaseModel):
            notes.update({k: v for k, v in _comments(klass).items() if v})
    rows = ["| key | type | default | description |", "|:---|:---|:---|:---|"]
    for name, field in model.model_fields.items():
        rows.append(f"| `{prefix}{name}` | {_cell(_type(field.annotation))} | {_cell(_default(field))} | "
                    f"{_cell(notes.get(name, field.description or ''))} |")
    return rows


def render() -> str:
    """The whole page as Markdown."""
    from . import config, sequencer, terms

    out = ["# Configuration reference", "",
           "Generated from the typed schema by `python -m kdrepro.config_reference`; do not edit by hand "
           "(`tests/test_docs.py` fails when this page differs from the code). Every key is accepted "
           "in a config file (`--config run.yaml`), as `--set key=value`, in a profile and in the Python "
           "API; see [the method](method.md) for what the sections mean and [the command line](cli.md) "
           "for the commands.", "",
           "## Run keys", "",
           "`None` takes the value from the method preset and the recipe. Runtime keys "
           f"({', '.join(f'`{k}`' for k in sorted(config.RUNTIME_FIELDS))}) are not part of a run's id.", ""]
    out += _fields_table(config.RunConfig)
    out += ["", "## Recipes (`recipe`)", "",
            "A recipe fills every optimisation field and loss weight left unset.", "",
            "| recipe | " + " | ".join(config.OPTIM_FIELDS) + " | losses |",
            "|:---|" + "---:|" * len(config.OPTIM_FIELDS) + ":---|"]
    for name, recipe in config.RECIPES.items():
        cells = [f"{recipe[k]!r}" for k in config.OPTIM_FIELDS]
        losses = "; ".join(f"{t}: {p}" for t, p in recipe["losses"].items())
        out.append(f"| `{name}` | " + " | ".join(cells) + f" | {_cell(losses)} |")
    out += ["", "## Loss terms (`losses.<term>.<param>`)", "",
            "Terms are summed in this order; a term with weight 0 is inactive.", ""]
    for name in terms.TERMS.names():
        term = terms.TERMS.get(name)
        out += [f"### `{name}`: {term.display}", ""]
        out += _fields_table(term.Params, prefix=f"losses.{name}.")
        out.append("")
    out += ["## Curriculum (`curriculum.<key>`)", ""]
    out += _fields_table(config.CurriculumConfig, prefix="curriculum.")
    out += ["", "| registry | names |", "|:---|:---|",
            f"| `curriculum.score` | {', '.join(f'`{n}`' for n in sequencer.SCORES.names())} |",
            f"| `curriculum.order` | {', '.join(f'`{n}`' for n in sequencer.ORDERS.names())} |",
            f"| `curriculum.pacing` | {', '.join(f'`{n}`' for n in sequencer.PACINGS.names() if n != 'none')} |",
            "", "### Score options (`curriculum.score_options.<key>`)", ""]
    for name in sequencer.SCORES.names():
        params = sequencer.SCORES.get(name).Params
        if params.model_fields:
            out += [f"`score: {name}`", ""] + _fields_table(params, prefix="score_options.") + [""]
    out += ["The other scores take no option.", "", "### Pacing options (`curriculum.pacing_options.<key>`)", ""]
    for name in sequencer.PACINGS.names():
        params, _ = sequencer.PACINGS.get(name)
        if name == "none" or not params.model_fields:
            continue
        out += [f"`pacing: {name}`", ""] + _fields_table(params, prefix="pacing_options.") + [""]
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    PAGE.write_text(render())
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
