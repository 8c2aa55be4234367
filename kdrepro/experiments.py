"""Experiment profiles and the studies behind the notebooks.

A profile (``kdrepro/profiles/<name>.yaml``, checked by :class:`kdrepro.profile.Profile`; its keys are
documented in ``docs/profiles.md``) is the one source of truth for the notebooks and ``make reproduce``: data sets, teacher/student pairs, the recipe
and epochs shared by every run (``base``), seeds, epoch budgets, the KD baselines and the ablations.

:class:`Experiment` turns a profile into resolved runs (:class:`~kdrepro.resolution.ResolvedRun`), runs them through
the run store (:class:`~kdrepro.runs.RunStore`: a finished run is read back, never retrained; an
unfinished one resumes) and returns *tidy* tables, one row per run, that :mod:`kdrepro.report`
summarises. The studies, one per notebook:

* ``baselines`` (01): each pair's teacher (seed 0, the one every student distils from) and the vanilla
  student (CE only) for every seed;
* ``kd_baselines`` (02): vanilla, KD and the profile's ``kd_baselines`` (FitNets, AT) for every seed;
* ``main`` (03): teacher, vanilla, KD and SLKD for every data set, pair and seed (the paper's main table);
* ``ablations`` (04): SLKD variants on the first data set and pair, one axis at a time (score, order,
  pacing, logit-MSE on/off, the authors' quirks), with KD as the no-curriculum reference;
* ``budgets`` (05): KD and SLKD at every epoch budget, for the accuracy-against-iterations figures.

:meth:`Experiment.anatomy` (06) opens one SLKD run's curriculum records (what each phase's snapshot
scored and selected) and compares the snapshot's ranking with the teacher's
(:class:`kdrepro.anatomy.CurriculumAnatomy`); :func:`kdrepro.zoo.model_zoo` gives the networks' costs.
This module re-exports the names of :mod:`kdrepro.profile`, :mod:`kdrepro.anatomy` and :mod:`kdrepro.zoo`
that the notebooks call through it.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import pandas as pd

from .config import ConfigError, CurriculumConfig, RunConfig, merge
from .resolution import AUGMENT_FIELDS, OPTIM_FIELDS, PRESETS, ResolvedRun, resolution_memo, resolve
from .profile import (ABLATION_AXES, BUDGET_METHODS, MSE_VARIANTS, PROFILE_DIR, QUIRK_VARIANTS,  # noqa: F401
                      Pair, Profile, ProfileError, list_profiles, load_profile, parse_profile)
from .anatomy import CurriculumAnatomy
from .data import dataset_num_classes
from .runs import RunResult, RunStore
from .studies import STUDIES
from .zoo import HE2016_PARAMS_M, count_macs, model_cost, model_zoo  # noqa: F401

with warnings.catch_warnings():
    # In a Jupyter kernel without ipywidgets, tqdm.auto (used by the engine) warns "IProgress not found" on
    # its first import only, i.e. only in notebooks that train a run. Importing it here, quietly, keeps a
    # notebook's output the same whether its runs are trained or read from the store (nbval compares it).
    warnings.simplefilter("ignore")
    import tqdm.auto  # noqa: F401

#: columns of every tidy run table, in order (studies add ``axis``/``variant`` labels)
RUN_COLUMNS = ("dataset", "teacher", "student", "method", "model", "variant", "seed", "epochs", "last_top1",
               "best_top1", "best_epoch", "iterations", "images_seen", "train_seconds", "wall_seconds", "device",
               "run_id", "flags")

log = logging.getLogger("kdrepro.experiments")


class MissingRunsError(RuntimeError):
    """With ``train=False``: a study (or the curriculum anatomy) has no finished run to show yet."""


# ------------------------------------------------------------------------------------------------ studies


@dataclass(frozen=True)
class Planned:
    """One run of a study: its table labels and its resolved run."""

    labels: Mapping[str, Any]
    config: ResolvedRun


class Experiment:
    """A profile bound to a results folder, a device and a data root: plans, runs and tabulates studies.

    ``seeds`` (None: the profile's) replaces the profile's ``seeds`` *and* ``ablation_seeds``,
    ``axis_seeds`` and ``budget_seeds``.
    Tables go to ``<results_dir>/<profile>/tables``, figures to ``.../figures``; runs live in the shared
    store ``<results_dir>/runs``, so a teacher is trained once for every notebook and profile that
    names the same configuration.
    """

    def __init__(self, profile: str | Path | Profile = "smoke", results_dir: str | Path = "results",
                 data_root: str | None = None, seeds: Sequence[int] | None = None, device: str = "auto",
                 train: bool = True):
        self.profile = profile if isinstance(profile, Profile) else load_profile(profile)
        #: False: studies use the finished runs only and list the others (``table.attrs["missing"]``)
        self.train = bool(train)
        if seeds is not None:
            if isinstance(seeds, int) or not all(isinstance(s, int) for s in seeds) or not len(seeds):
                raise ProfileError(f"seeds must be None (the profile's) or a non-empty list of ints, got {seeds!r}")
            if len(set(seeds)) != len(seeds):
                raise ProfileError(f"seeds {list(seeds)}: each seed once (a repeated seed would count one run twice)")
            self.seeds = self.ablation_seeds = self.budget_seeds = tuple(seeds)
            self.axis_seeds: dict[str, tuple[int, ...]] = {}
            self.method_seeds: dict[str, tuple[int, ...]] = {}
        else:
            self.seeds, self.ablation_seeds = self.profile.seeds, self.profile.ablation_seeds
            self.budget_seeds = self.profile.budget_seeds or self.ablation_seeds
            self.axis_seeds = dict(self.profile.axis_seeds)
            self.method_seeds = dict(self.profile.method_seeds)
        self.results_dir = Path(results_dir)
        self.data_root = None if data_root is None else str(data_root)
        self.device = device
        self.store = RunStore(self.results_dir)
        self._resolved: dict[str, ResolvedRun] = {}  # resolution_memo

    def __repr__(self) -> str:
        p = self.profile
        return "\n".join([
            f"profile {p.name}: {p.description}",
            f"  data sets   {', '.join(p.datasets)}",
            f"  pairs       {'; '.join(pair.label for pair in p.pairs)}",
            f"  recipe      {p.base.get('recipe', 'slkd')}, {p.base.get('epochs', 'recipe')} epochs, "
            f"seeds {list(self.seeds)} ({self._other_seeds()})",
            f"  hardware    {p.hardware}; expected time: {p.expected_time}",
            f"  results     {self.results_dir.as_posix()}/runs (runs), {self.out_dir.as_posix()} (tables, figures)",
        ])

    def _other_seeds(self) -> str:
        if not self.axis_seeds and self.budget_seeds == self.ablation_seeds:
            return f"ablations and budgets: {list(self.ablation_seeds)}"
        axes = "".join(f", {axis}: {list(s)}" for axis, s in self.axis_seeds.items())
        return f"ablations: {list(self.ablation_seeds)}{axes}; budgets: {list(self.budget_seeds)}"

    def seeds_of_axis(self, axis: str) -> tuple[int, ...]:
        """The seeds of one ablation axis: ``axis_seeds[axis]`` when the profile sets it, else ``ablation_seeds``."""
        return self.axis_seeds.get(axis, self.ablation_seeds)

    @property
    def out_dir(self) -> Path:
        return self.results_dir / self.profile.name

    @property
    def tables_dir(self) -> Path:
        return self.out_dir / "tables"

    @property
    def figures_dir(self) -> Path:
        return self.out_dir / "figures"

    # -------------------------------------------------------------------------------- configurations
    def config(self, dataset: str, model: str, method: str = "ce", seed: int = 0,
               teacher: Mapping[str, Any] | None = None, **overrides: Any) -> ResolvedRun:
        """The resolved run: the profile's ``base`` (its ``curriculum`` only for a method that has one),
        then the study's choices, then ``overrides``."""
        base = {k: v for k, v in self.profile.base.items() if k != "curriculum" or PRESETS[method][1] is not None}
        data = merge(base, {
            "dataset": dataset, "dataset_options": dict(self.profile.dataset_options.get(dataset, {})),
            "model": model, "method": method, "seed": seed})
        data = merge(data, overrides)
        if isinstance(data.get("curriculum"), dict):  # a key at its default is the same run: one spelling of it
            defaults = {**CurriculumConfig().model_dump(mode="json"), **PRESETS[method][1]}
            data["curriculum"] = {k: v for k, v in data["curriculum"].items() if k not in defaults or v != defaults[k]}
            if not data["curriculum"]:
                del data["curriculum"]
        data.update(device=self.device, data_root=self.data_root)
        if teacher is not None:
            data["teacher"] = dict(teacher)
        with resolution_memo(self._resolved):  # a run (or teacher) that several studies plan: resolved once
            return resolve(RunConfig.from_dict(data))

    def teacher_overrides(self, pair: Pair) -> dict[str, Any]:
        """The teacher's run-config keys: the profile's recipe and augmentation ``base`` keys, then the pair's."""
        base = {k: v for k, v in self.profile.base.items() if k in ("recipe", *OPTIM_FIELDS, *AUGMENT_FIELDS)}
        return {**base, **pair.teacher}

    def student_config(self, dataset: str, pair: Pair, method: str, seed: int, **overrides: Any) -> ResolvedRun:
        """A student of ``pair``: vanilla (``method="ce"``, no teacher), KD or SLKD."""
        teacher = None if method == "ce" else self.teacher_overrides(pair)
        return self.config(dataset, pair.student, method, seed, teacher=teacher, **overrides)

    def teacher_config(self, dataset: str, pair: Pair) -> ResolvedRun:
        """The teacher run exactly as its students resolve it (same run id, so it is trained once)."""
        return self.student_config(dataset, pair, "kd", self.seeds[0]).teacher

    # ------------------------------------------------------------------------------------------ plans
    def plan(self, study: str) -> list[Planned]:
        """Every run of ``study`` (one of :data:`STUDIES`) with its labels, in run order; trains nothing."""
        if study not in STUDIES:
            raise ValueError(f"unknown study {study!r}; choose one of {', '.join(STUDIES)}")
        try:
            return list(getattr(self, f"_plan_{study}")())
        except ConfigError as err:
            raise ProfileError(f"profile {self.profile.name!r}, study {study!r}: {err}") from None

    def _pairs(self, first_only: bool = False) -> Iterator[tuple[str, Pair]]:
        datasets = self.profile.datasets[:1] if first_only else self.profile.datasets
        pairs = self.profile.pairs[:1] if first_only else self.profile.pairs
        for ds in datasets:
            for pair in pairs:
                yield ds, pair

    @staticmethod
    def _labels(ds: str, pair: Pair, method: str, seed: int, **extra: Any) -> dict[str, Any]:
        model = pair.teacher_model if method == "teacher" else pair.student  # the network this run trains
        return {"dataset": ds, "teacher": pair.teacher_model, "student": pair.student, "method": method,
                "model": model, "variant": "", "seed": seed, **extra}

    def _teacher_planned(self, ds: str, pair: Pair) -> Planned:
        cfg = self.teacher_config(ds, pair)
        return Planned(self._labels(ds, pair, "teacher", cfg.seed), cfg)

    def seeds_of(self, label: str) -> tuple[int, ...]:
        """The seeds of one method of the baseline, KD and main tables: ``method_seeds[label]`` when the
        profile sets it, else ``seeds``."""
        return self.method_seeds.get(label, self.seeds)

    def _by_seed(self, labels: Sequence[str]) -> Iterator[tuple[int, str]]:
        """``(seed, label)`` seed by seed (every seed of any label, in order), each label at its own seeds."""
        seeds = dict.fromkeys(s for label in labels for s in self.seeds_of(label))
        for seed in seeds:
            for label in labels:
                if seed in self.seeds_of(label):
                    yield seed, label

    def _plan_baselines(self) -> Iterator[Planned]:
        for ds, pair in self._pairs():
            yield self._teacher_planned(ds, pair)
            for seed, _ in self._by_seed(["vanilla"]):
                yield Planned(self._labels(ds, pair, "vanilla", seed), self.student_config(ds, pair, "ce", seed))

    def _plan_kd_baselines(self) -> Iterator[Planned]:
        for ds, pair in self._pairs():
            for seed, label in self._by_seed(["vanilla", "kd", *self.profile.kd_baselines]):
                method = {"vanilla": "ce"}.get(label, "kd")
                overrides = self.profile.kd_baselines.get(label, {})
                yield Planned(self._labels(ds, pair, label, seed),
                              self.student_config(ds, pair, method, seed, **overrides))

    def _plan_main(self) -> Iterator[Planned]:
        for ds, pair in self._pairs():
            yield self._teacher_planned(ds, pair)
            for seed, label in self._by_seed(["vanilla", "kd", "slkd"]):
                method = {"vanilla": "ce"}.get(label, label)
                yield Planned(self._labels(ds, pair, label, seed), self.student_config(ds, pair, method, seed))

    def ablation_variants(self) -> list[tuple[str, str, dict[str, Any]]]:
        """``(axis, variant, run-config overrides)`` for every ablation of the profile."""
        return [(axis, v.label, dict(v.overrides)) for axis, variants in self.profile.ablations.items()
                for v in variants]

    def _plan_ablations(self) -> Iterator[Planned]:
        """KD (the no-curriculum reference) for every ``ablation_seeds``, then every variant of every axis
        for that axis's seeds (:meth:`seeds_of_axis`), seed by seed."""
        variants = self.ablation_variants()
        seeds = list(dict.fromkeys([*self.ablation_seeds, *(s for axis, _, _ in variants
                                                            for s in self.seeds_of_axis(axis))]))
        for ds, pair in self._pairs(first_only=True):
            for seed in seeds:
                default = self.student_config(ds, pair, "slkd", seed)
                if seed in self.ablation_seeds:
                    yield Planned(self._labels(ds, pair, "kd", seed, axis="reference", variant="kd (no curriculum)",
                                               default=False), self.student_config(ds, pair, "kd", seed))
                for axis, variant, overrides in variants:
                    if seed not in self.seeds_of_axis(axis):
                        continue
                    cfg = self.student_config(ds, pair, "slkd", seed, **overrides)
                    yield Planned(self._labels(ds, pair, "slkd", seed, axis=axis, variant=variant,
                                               default=cfg.run_id == default.run_id), cfg)

    def _plan_budgets(self) -> Iterator[Planned]:
        """The profile's ``budget_methods`` (default KD and SLKD) at every budget for ``budget_seeds``."""
        for ds, pair in self._pairs(first_only=True):
            for budget in self.profile.budgets:
                for seed in self.budget_seeds:
                    for label in self.profile.budget_methods:
                        yield Planned(self._labels(ds, pair, label, seed, variant=f"{budget} epochs"),
                                      self.student_config(ds, pair, BUDGET_METHODS[label], seed, epochs=budget))

    def matched_epochs(self, dataset: str, pair: Pair, epochs: int) -> tuple[int, int]:
        """``(kd_epochs, slkd_steps)``: the optimizer steps an SLKD student of ``pair`` takes at ``epochs``
        (computed from its schedule and the data set's class counts, :func:`kdrepro.engine.planned_steps`)
        and the KD epoch budget whose steps come closest to them."""
        from .data import load_dataset
        from .engine import planned_steps

        slkd = self.student_config(dataset, pair, "slkd", self.budget_seeds[0], epochs=epochs)
        targets = load_dataset(dataset, root=self.data_root, train=True, **slkd.dataset_options).targets
        kd = self.student_config(dataset, pair, "kd", self.budget_seeds[0], epochs=epochs)
        steps, kd_per_epoch = planned_steps(slkd, targets), planned_steps(kd, targets) / epochs
        return max(1, round(steps / kd_per_epoch)), steps

    def check_matched_steps(self) -> None:
        """Raise :class:`ProfileError` unless every ``matched_steps`` KD budget is the one whose steps come
        closest to SLKD's (:meth:`matched_epochs`; loads the first data set)."""
        for ds, pair in self._pairs(first_only=True):
            for budget, kd_epochs in self.profile.matched_steps.items():
                expected, steps = self.matched_epochs(ds, pair, budget)
                if kd_epochs != expected:
                    raise ProfileError(
                        f"profile {self.profile.name!r}: matched_steps {budget}: {kd_epochs} KD epochs do not match "
                        f"SLKD's {steps} optimizer steps at {budget} epochs; the closest KD budget is {expected}")

    def _plan_matched(self) -> Iterator[Planned]:
        """For every ``matched_steps`` entry ``{slkd_epochs: kd_epochs}``: SLKD at ``slkd_epochs``, KD at the
        same epochs, and KD at ``kd_epochs``, the budget whose optimizer steps match SLKD's
        (:meth:`matched_epochs`, checked by :meth:`check_matched_steps`; the recipe's lr drops scale with
        the budget), for ``budget_seeds``: the "fewer iterations" claim at equal steps."""
        for ds, pair in self._pairs(first_only=True):
            for budget in self.profile.matched_steps:
                kd_epochs = self.profile.matched_steps[budget]
                for seed in self.budget_seeds:
                    yield Planned(self._labels(ds, pair, "slkd", seed, variant=f"{budget} epochs", budget=budget),
                                  self.student_config(ds, pair, "slkd", seed, epochs=budget))
                    yield Planned(self._labels(ds, pair, "kd", seed, variant=f"{budget} epochs", budget=budget),
                                  self.student_config(ds, pair, "kd", seed, epochs=budget))
                    yield Planned(self._labels(ds, pair, "kd_matched", seed, variant=f"{kd_epochs} epochs",
                                               budget=budget),
                                  self.student_config(ds, pair, "kd", seed, epochs=kd_epochs))

    def all_configs(self) -> list[ResolvedRun]:
        """Every distinct run of every study (teachers first), in the order the notebooks would train them."""
        seen: dict[str, ResolvedRun] = {}
        for study in STUDIES:
            for planned in self.plan(study):
                cfg = planned.config
                chain = [cfg]
                while chain[-1].has_teacher_run:
                    chain.append(chain[-1].teacher)
                for c in reversed(chain):
                    seen.setdefault(c.run_id, c)
        return list(seen.values())

    # -------------------------------------------------------------------------------------------- runs
    def run(self, cfg: ResolvedRun | RunConfig) -> RunResult:
        """The finished result of ``cfg`` from the store (trained or resumed when needed)."""
        return self.store.run(cfg, log=log.info)

    def run_study(self, study: str) -> pd.DataFrame:
        """Run every planned run of ``study`` (finished runs are read back) and return the tidy table. With
        ``train=False`` unfinished runs are left out and named in ``table.attrs["missing"]``, which the
        report's tables and figures carry on and print ("incomplete: ... missing")."""
        rows, lacking = [], {}  # run id -> (method and seed, variants): a run in two rows is one missing run
        for planned in self.plan(study):
            if not self.train and self.store.status(planned.config) != "finished":
                _note_missing(lacking, planned)
                continue
            rows.append(run_row(self.run(planned.config), planned.labels))
        missing = _missing_names(lacking)
        if not rows and missing:
            raise MissingRunsError(f"study {study!r} of profile {self.profile.name!r} has none of its {len(missing)} "
                                   "runs in the store yet (train=False)")
        table = pd.DataFrame(rows, columns=_columns(rows))
        table.attrs["missing"] = missing
        return table

    def every_run(self) -> pd.DataFrame:
        """Every finished run of the profile (:meth:`all_configs`, teachers included), one row each, labelled
        by data set, method, model and seed; never trains. The runs not finished are named in
        ``table.attrs["missing"]``. Notebook 05 sums their run time per device kind from it."""
        rows, unfinished = [], {}
        for cfg in self.all_configs():
            if self.store.status(cfg) != "finished":
                unfinished[cfg.run_id] = cfg
                continue
            labels = {"dataset": cfg.dataset, "method": cfg.method, "model": cfg.model, "seed": cfg.seed}
            rows.append(run_row(self.store.run(cfg, train=False), labels))
        lacking: dict[str, tuple[str, list[str]]] = {}
        for study in STUDIES if unfinished else ():  # named as the studies name them
            for planned in self.plan(study):
                if planned.config.run_id in unfinished:
                    _note_missing(lacking, planned)
        for run_id, cfg in unfinished.items():  # a teacher: no study plans it
            lacking.setdefault(run_id, (f"{cfg.method} {cfg.model} seed {cfg.seed}", []))
        table = pd.DataFrame(rows, columns=_columns(rows))
        table.attrs["missing"] = _missing_names(lacking)
        return table

    def baselines(self) -> pd.DataFrame:
        return self.run_study("baselines")

    def kd_baselines(self) -> pd.DataFrame:
        return self.run_study("kd_baselines")

    def main(self) -> pd.DataFrame:
        return self.run_study("main")

    def ablations(self) -> pd.DataFrame:
        return self.run_study("ablations")

    def budgets(self) -> pd.DataFrame:
        return self.run_study("budgets")

    def matched(self) -> pd.DataFrame:
        """The matched-step study (empty when the profile has no ``matched_steps``, or, with
        ``train=False``, none of its runs is finished)."""
        try:
            return self.run_study("matched")
        except MissingRunsError:
            return pd.DataFrame()

    def curves(self, runs: pd.DataFrame) -> pd.DataFrame:
        """Per-epoch metrics of every run in ``runs`` (a tidy table), with the run's labels."""
        frames = []
        for row in runs.to_dict("records"):
            metrics = pd.DataFrame(self.store.load(row["run_id"]).metrics())
            for key in ("dataset", "teacher", "student", "method", "model", "variant", "seed", "device", "run_id"):
                if key in row:
                    metrics[key] = row[key]
            frames.append(metrics)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    # ---------------------------------------------------------------------------------------- data sets
    def load_datasets(self) -> dict[str, tuple[Any, Any]]:
        """``{name: (train, test)}`` for every data set of the profile."""
        from .data import load_dataset

        return {ds: (load_dataset(ds, root=self.data_root, train=True, **self.profile.dataset_options.get(ds, {})),
                     load_dataset(ds, root=self.data_root, train=False, **self.profile.dataset_options.get(ds, {})))
                for ds in self.profile.datasets}

    def profile_models(self) -> pd.DataFrame:
        """Parameters and multiply-adds of the profile's teachers and students at each data set's shape."""
        rows = []
        for ds, (train, _) in self.load_datasets().items():
            seen = []
            for pair in self.profile.pairs:
                for role, model in (("teacher", pair.teacher_model), ("student", pair.student)):
                    if model in seen:
                        continue
                    seen.append(model)
                    cost = model_cost(model, train.image_shape, train.num_classes)
                    rows.append({"dataset": ds, "role": role, "model": model, **cost})
        return pd.DataFrame(rows)

    # ----------------------------------------------------------------------------------------- anatomy
    def anatomy(self, dataset: str | None = None, pair: Pair | None = None, seed: int | None = None) -> "CurriculumAnatomy":
        """The curriculum of the profile's SLKD run (default: first data set, pair and seed)."""
        from .data import load_dataset

        ds = dataset or self.profile.datasets[0]
        pair = pair or self.profile.pairs[0]
        cfg = self.student_config(ds, pair, "slkd", self.seeds[0] if seed is None else seed)
        if not self.train and any(self.store.status(c) != "finished" for c in (cfg, cfg.teacher)):
            raise MissingRunsError(f"the curriculum anatomy needs the SLKD run {cfg.run_id} and its teacher, which "
                                   "are not both in the store yet (train=False)")
        result = self.run(cfg)
        teacher_result = self.run(cfg.teacher)
        train = load_dataset(ds, root=self.data_root, train=True, **cfg.dataset_options)
        from .sequencer import SCORES

        score, options = cfg.curriculum.score, cfg.score_options
        if SCORES.get(score).needs_teacher:  # a teacher cannot be scored against itself
            score, options = "max_logit", None
        teacher_scores = self.teacher_scores(teacher_result, train, score, cfg.num_threads, score_options=options)
        return CurriculumAnatomy(result, train, result.curriculum(), teacher_scores.numpy(), score)

    @staticmethod
    def teacher_scores(teacher_result: RunResult, train, score: str, num_threads: int | None = None,
                       score_options=None):
        """The teacher's ``score`` (with the run's ``score_options``) of every un-augmented training image,
        stored once as ``<teacher run>/scores/<score>.pt`` (20 KB for 5k images; options other than the
        score's defaults are part of the name: ``<score>(T=3.0).pt``) beside its summary, so that notebook 06
        also works from a run store without the teacher's weights (which stay out of git)."""
        from .engine import torch_threads
        from .models import create_model
        from .rundir import RunDir
        from .sequencer import score_instances, score_params

        params = score_params(score, score_options)
        defaults = score_params(score).model_dump()
        given = {k: v for k, v in params.model_dump().items() if v != defaults[k]}
        name = score + (f"({', '.join(f'{k}={v}' for k, v in sorted(given.items()))})" if given else "")
        rd = RunDir(teacher_result.run_dir)
        path = rd.scores(name)
        if path.exists():
            stored = rd.load(path)
            if stored["fingerprint"] == train.fingerprint() and len(stored["scores"]) == len(train):
                return stored["scores"]
        if not rd.weights.exists():
            raise FileNotFoundError(
                f"the teacher's {name} scores ({path}) and weights ({rd.weights}) are both missing: delete the "
                f"teacher run {teacher_result.run_id} to retrain it")
        tcfg = teacher_result.config
        teacher = create_model(tcfg.model, train.num_classes, in_channels=train.image_shape[0],
                               weights=str(rd.weights), **tcfg.model_options)
        with torch_threads(num_threads):
            scores = score_instances(teacher, train, score, device="cpu", score_options=params)
        rd.save({"scores": scores, "fingerprint": train.fingerprint()}, path)
        return scores


def run_row(result: RunResult, labels: Mapping[str, Any]) -> dict[str, Any]:
    """One tidy row: the study's labels and the run's summary numbers; a diverged run has no top-1 (NaN in
    a table) and a ``diverged`` entry naming where it diverged."""
    s = result.summary
    row = dict(labels)
    row.update(epochs=s["epochs"], last_top1=s["last_top1"], best_top1=s["best_top1"], best_epoch=s["best_epoch"],
               iterations=s["iterations"], images_seen=s["images_seen"], train_seconds=s["train_seconds"],
               wall_seconds=s["wall_seconds"], device=run_device(s), run_id=result.run_id,
               flags=",".join(run_flags(result)))
    if s.get("diverged"):  # no accuracy (None); where it diverged, e.g. "epoch 12" (only then a column)
        row["diverged"] = s["diverged"].get("where") or f"epoch {s['diverged'].get('epoch')}"
    return row


def run_device(summary: Mapping[str, Any]) -> str:
    """Where a run was trained, its device kind, from its summary's environment: ``GPU: <name>``, or
    ``CPU: <name> (<cpu_model>)`` (:func:`kdrepro.engine.cpu_model`: two CPUs of one name can round
    differently). Runs stored before summaries recorded the CPU's model give ``CPU: <name>``, and those stored
    before they recorded its name ``CPU: model not recorded``."""
    env = summary.get("environment") or {}
    name = str(env.get("device_name") or "").replace("(R)", "").replace("(TM)", "")
    name = " ".join(name.replace(" Processor", "").split())
    if str(env.get("device", "cpu")).startswith("cuda"):
        return f"GPU: {name or 'model not recorded'}"
    if not name or name.lower() == "cpu":
        return "CPU: model not recorded"
    model = env.get("cpu_model")
    return f"CPU: {name} ({model})" if model and model != "unknown" else f"CPU: {name}"


def run_flags(result: RunResult) -> list[str]:
    """A finished run's health flags (:func:`kdrepro.engine.health_flags`): from its summary, or computed
    from its metrics for runs stored before summaries kept them."""
    if "flags" in result.summary:
        return list(result.summary["flags"])
    from .engine import health_flags

    return health_flags(result.metrics(), result.summary.get("num_classes")
                        or dataset_num_classes(result.config.dataset))  # runs stored before summaries had it


def _note_missing(lacking: dict[str, tuple[str, list[str]]], planned: "Planned") -> None:
    """Record a planned run that is not finished: its method and seed, and every variant it stands for (one
    run can be several rows of a study, e.g. the authors' setting of each ablation axis)."""
    lab = planned.labels
    _, variants = lacking.setdefault(planned.config.run_id, (f"{lab['method']} seed {lab['seed']}", []))
    if lab.get("variant") and lab["variant"] not in variants:
        variants.append(lab["variant"])


def _missing_names(lacking: dict[str, tuple[str, list[str]]]) -> list[str]:
    """"<method> seed <s> (<variants>) [<run id>]" for each run :func:`_note_missing` recorded."""
    return [who + (f" ({', '.join(variants)})" if variants else "") + f" [{run_id}]"
            for run_id, (who, variants) in lacking.items()]


def _columns(rows: list[dict]) -> list[str]:
    extra = [k for row in rows for k in row if k not in RUN_COLUMNS]
    return list(RUN_COLUMNS[:6]) + list(dict.fromkeys(extra)) + list(RUN_COLUMNS[6:])


# ------------------------------------------------------------------------------------- curriculum anatomy
