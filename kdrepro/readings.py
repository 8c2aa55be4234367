"""What a notebook's profile ran, and the profile's written reading of the notebook's tables.

Each notebook shows, right after its parameters, :func:`scope` of its profile: the data sets, pairs,
methods, axes, budgets and seeds that this profile runs for this notebook, and nothing it does not run.
It ends with :func:`reading`: the Markdown file ``kdrepro/readings/<profile>/<notebook>.md`` (or the
profile's ``all.md``), written by hand for that profile, so the interpretation sits next to the numbers it interprets.
``tests/test_readings.py`` checks that every number a reading quotes is in that notebook's tables.
"""
from __future__ import annotations

from pathlib import Path

from .experiments import Experiment

READINGS = Path(__file__).resolve().parent / "readings"

#: what each ablation axis varies, and what each of its variants is (notebook 04 lists what its profile runs)
AXES = {
    "score": ("how the snapshot ranks an image", {
        "max_logit": "its maximum logit (the authors')", "true_class_prob": "the true-class probability",
        "ce_loss": "the negative cross-entropy", "margin": "the margin of the true class over the best other class",
        "teacher_kl": "its agreement with the teacher (−KL)"}),
    "order": ("which images come first", {
        "easy_first": "easy first (the curriculum, the authors')", "hard_first": "hard first (anti-curriculum)",
        "random": "random subsets of the same sizes (control)"}),
    "pacing": ("how the pool grows", {
        "authors": "the authors' phase boundaries", "linear": "equal-length phases, the fraction growing linearly",
        "root": "equal-length phases, the fraction growing as a square root",
        "step": "equal steps of the fraction",
        "full": "the authors' warm-up, then every image in one phase (KD plus the MSE term, without the curriculum)"}),
    "mse": ("the logit-MSE term to the teacher in the curriculum phases", {
        "on": "on (the authors')", "off": "off (the curriculum alone)"}),
    "quirks": ("behaviours of the authors' code that the reproduction leaves off by default (docs/method.md)", {
        "none": "neither (the reproduction's default)", "no_warmup_augment": "no augmentation during the warm-up",
        "mse_to_snapshot": "the snapshot's logits as the MSE target"}),
}
#: display names of the methods of notebook 02
METHODS = {"vanilla": "vanilla student", "kd": "KD", "slkd": "SLKD", "fitnet": "FitNets", "at": "attention transfer",
           "dkd": "DKD", "crd": "CRD"}


def _method(label: str) -> str:
    """A method's name in a scope: :data:`METHODS`, else the registered loss term's display name (SP, PKT)."""
    if label in METHODS:
        return METHODS[label]
    from .report import METHOD_NAMES

    return METHOD_NAMES.get(label, label)


def _seeds(seeds) -> str:
    seeds = list(seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"seeds {seeds[0]}–{seeds[-1]}"
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}"


def _pairs(exp: Experiment) -> str:
    return "; ".join(f"{p.label} (teacher {p.teacher.get('epochs', exp.profile.base.get('epochs', 'recipe'))} epochs)"
                     for p in exp.profile.pairs)


def scope(exp: Experiment, notebook: str) -> str:
    """Markdown: what ``exp``'s profile runs for ``notebook`` (a prefix such as ``"04"``)."""
    p, nb = exp.profile, notebook[:2]
    epochs = p.base.get("epochs", "the recipe's")
    head = f"**What the `{p.name}` profile runs for this notebook.** "
    data = f"Data: {', '.join(f'`{d}`' for d in p.datasets)}; pairs: {_pairs(exp)}; students trained for {epochs} epochs."
    if nb == "00":
        body = f"{data} The model zoo lists every registered architecture; the profile uses the pairs' models."
    elif nb == "01":
        body = f"{data} One teacher per pair (seed 0); vanilla students at {_seeds(exp.seeds_of('vanilla'))}."
    elif nb == "02":
        methods = ["vanilla", "kd", *p.kd_baselines]
        body = f"{data} Methods: " + "; ".join(f"{_method(m)} at {_seeds(exp.seeds_of(m))}" for m in methods) + "."
    elif nb == "03":
        body = (f"{data} Vanilla student at {_seeds(exp.seeds_of('vanilla'))}, KD at {_seeds(exp.seeds_of('kd'))}, "
                f"SLKD at {_seeds(exp.seeds_of('slkd'))}.")
    elif nb == "04":
        if not p.ablations:
            body = "This profile runs no ablation."
        else:
            lines = [f"On the first data set and pair, with KD at {_seeds(exp.ablation_seeds)} as the reference:"]
            for axis, variants in p.ablations.items():
                what, names = AXES.get(axis, (axis, {}))
                described = "; ".join(f"`{v.label}`: {names.get(v.label, v.label)}" for v in variants)
                lines.append(f"* **{axis}**, {what} ({_seeds(exp.seeds_of_axis(axis))}): {described}")
            body = "\n".join(lines)
    elif nb == "05":
        if not p.budgets:
            body = "This profile runs no budget study."
        else:
            body = (f"Budgets of {', '.join(map(str, p.budgets))} epochs for "
                    f"{', '.join(METHODS.get(m, m) for m in p.budget_methods)} at {_seeds(exp.budget_seeds)}, on the "
                    f"first data set and pair.")
            if p.matched_steps:
                body += " " + " ".join(f"KD at {kd} epochs takes the optimizer steps of SLKD at {slkd}."
                                       for slkd, kd in p.matched_steps.items())
    elif nb == "06":
        body = f"The SLKD run of seed 0 on `{p.datasets[0]}`, {p.pairs[0].label}, {epochs} epochs."
    else:
        body = data
    if p.name == "smoke":
        body += ("\n\nThe outputs stored in `notebooks/` come from this profile (`make notebooks`), and `make test` "
                 "replays them with nbval: the printed tables must come out digit for digit.")
    return head + body


def reading_path(profile: str, notebook: str) -> Path:
    return READINGS / profile / f"{notebook}.md"


def reading(exp: Experiment, notebook: str) -> str:
    """Markdown: the profile's written reading of ``notebook``'s tables (e.g. ``"04_ablations"``), or its
    ``all.md`` (one reading for every notebook of a profile whose numbers carry no evidence)."""
    path = reading_path(exp.profile.name, notebook)
    if not path.exists():
        path = READINGS / exp.profile.name / "all.md"
    if not path.exists():
        return (f"No reading is written for the `{exp.profile.name}` profile: the tables above are its results "
                f"(a reading goes in `kdrepro/readings/{exp.profile.name}/{notebook}.md`).")
    return path.read_text().strip()


def show_scope(exp: Experiment, notebook: str) -> None:
    from IPython.display import Markdown, display

    display(Markdown(scope(exp, notebook)))


def show_reading(exp: Experiment, notebook: str) -> None:
    from IPython.display import Markdown, display

    display(Markdown(reading(exp, notebook)))
