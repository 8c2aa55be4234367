"""The plan of a profile's unfinished runs: what each run waits for (its teacher; the run that builds the
teacher-logit cache it reads), in which order they start, how they group into job arrays, and the plan
that ``kdrepro train`` prints (:func:`plan_lines`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..cache import cache_group, cache_ready, group_marker
from ..config import RunConfig
from ..resolution import AUGMENT_FIELDS, OPTIM_FIELDS, ResolvedRun, resolve
from ..runs import RunStore


def uses_logit_cache(cfg: ResolvedRun) -> bool:
    """Whether a run reads the cache of a teacher run of the store (:attr:`ResolvedRun.reads_logit_cache`)."""
    return cfg.has_teacher_run and cfg.reads_logit_cache


@dataclass(eq=False)
class PlannedRun:
    """One unfinished run of a plan: its resolved run, the run ids it waits for, whether it builds a logit cache;
    and, while a local executor runs it, its worker."""

    cfg: ResolvedRun
    needs: set[str] = field(default_factory=set)
    builds_cache: bool = False
    #: the local executor's worker (:class:`kdrepro.executors.local._Worker`) once started
    worker: object | None = None
    started: float = 0.0
    log: Path | None = None
    #: its job record (:class:`kdrepro.executors.records.JobRecord`) once written
    record: object | None = None
    #: ``cfg.run_id``
    run_id: str = ""
    #: the run that builds the logit cache this run reads, while the file is not there yet; and the marker
    #: file (:func:`kdrepro.cache.group_marker`) whose appearance lets this run start before that run ends
    cache_builder: str | None = None
    cache_marker: Path | None = None
    #: runtime fields (:data:`kdrepro.resolution.RUNTIME_FIELDS`) its worker sets on top of the run's config
    runtime: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.run_id:
            self.run_id = self.cfg.run_id

    def config_dict(self) -> dict:
        """The run's config for its worker (``config.json`` form), with :attr:`runtime` on top."""
        return {**self.cfg.to_dict(), **self.runtime}

    @property
    def cost(self) -> float:
        """Relative training cost, for starting the longest runs first (a live teacher costs about double)."""
        live_teacher = self.cfg.method != "ce" and not uses_logit_cache(self.cfg)
        return self.cfg.epochs * (2.0 if live_teacher else 1.0)


def plan_jobs(configs: list[ResolvedRun | RunConfig], store: RunStore) -> list[PlannedRun]:
    """The unfinished runs of ``configs`` with the run ids each must wait for, in start order: teachers and
    the runs that build a logit cache first (a cache group whose file exists already has no builder; the
    local executor also starts a group's runs as soon as its builder has written the file,
    :func:`cache_built`), then the longest runs first (so that no long run is left to finish alone at the
    end), and among runs of equal length the lower seeds first, in ``configs`` order within a seed (so that
    a training stopped part way leaves whole paired comparisons, KD and SLKD of seed 0, rather than every
    seed of KD and no SLKD)."""
    pending = {}
    for c in map(resolve, configs):
        run_id = c.run_id
        if store.status(run_id) != "finished":
            pending[run_id] = c
    builders: dict[tuple, str] = {}
    jobs = []
    for run_id, cfg in pending.items():
        needs, builds = set(), False
        if cfg.has_teacher_run:
            teacher_id = cfg.teacher.run_id
            if teacher_id in pending:
                needs.add(teacher_id)
        builder, marker = None, None
        if uses_logit_cache(cfg):
            group = cache_group(cfg)
            marker = group_marker(store.cache_dir, group)
            if cache_ready(marker):  # the file is there: nothing to wait for
                pass
            elif group in builders:
                builder = builders[group]
                needs.add(builder)
            else:
                builders[group], builds = run_id, True
        jobs.append(PlannedRun(cfg, needs, builds_cache=builds, run_id=run_id, cache_builder=builder,
                               cache_marker=marker))
    teachers = {j.cfg.teacher.run_id for j in jobs if j.cfg.has_teacher_run}
    return sorted(jobs, key=lambda j: (j.run_id not in teachers, not j.builds_cache, -j.cost, j.cfg.seed))


def cache_build_threads(job: PlannedRun, waiting: list[PlannedRun], busy: int, workers: int) -> int | None:
    """The torch threads for ``job``'s teacher-logit cache build (``cache_threads``): every worker's core
    when ``job`` builds a cache, no other run is being trained (``busy``: runs running here or elsewhere) and
    every run still waiting needs that cache; otherwise None (the run's own ``num_threads``). The cache is a
    forward pass over every view of every image (40 minutes on one core for cifar10-5k), during which the
    other workers would sit idle; training itself keeps its ``num_threads``."""
    if not job.builds_cache or workers < 2 or busy or job.cfg.num_threads is None:
        return None
    if any(job.run_id not in other.needs for other in waiting):
        return None
    return workers * job.cfg.num_threads


def cache_built(job: PlannedRun) -> bool:
    """Drop ``job``'s wait for the run building its logit cache once the file is there (the builder writes
    its group marker when the cache is saved, minutes into a run of hours); True when it did."""
    if job.cache_builder in job.needs and job.cache_marker is not None and cache_ready(job.cache_marker):
        job.needs.discard(job.cache_builder)
        job.cache_builder = None
        return True
    return False


def _levels(plan: list[PlannedRun]) -> dict[str, int]:
    """How deep each run sits in the dependency graph of ``plan`` (0: waits for no run of the plan)."""
    ids = {j.run_id for j in plan}
    by_id = {j.run_id: j for j in plan}
    level: dict[str, int] = {}

    def depth(run_id: str, seen: frozenset = frozenset()) -> int:
        if run_id not in level:
            if run_id in seen:
                raise ValueError(f"dependency cycle through {run_id}")
            inner = [depth(n, seen | {run_id}) for n in by_id[run_id].needs if n in ids]
            level[run_id] = 1 + max(inner) if inner else 0
        return level[run_id]

    for j in plan:
        depth(j.run_id)
    return level


def submission_groups(plan: list[PlannedRun]) -> list[list[PlannedRun]]:
    """``plan`` cut into groups that can each be one job array: runs that wait for the same runs, groups in
    an order where every group comes after the groups it waits for, runs in plan order."""
    level = _levels(plan)
    groups: dict[tuple, list[PlannedRun]] = {}
    for j in plan:
        groups.setdefault((level[j.run_id], tuple(sorted(j.needs))), []).append(j)
    return [groups[k] for k in sorted(groups, key=lambda k: k[0])]


def _describe_run(cfg: ResolvedRun) -> str:
    terms = "+".join(cfg.terms)
    cur = cfg.curriculum
    curriculum = (f", curriculum {cur.score}/{cur.order}/{cur.pacing}" if cur else "")
    return f"{cfg.model}, {cfg.epochs} epochs, losses {terms}{curriculum}"


def _recipe_value(cfg: ResolvedRun, key: str) -> str:
    value = getattr(cfg, key)
    return ",".join(str(v) for v in value) if isinstance(value, tuple) else str(value)


def teacher_recipe_line(student: ResolvedRun, teacher: ResolvedRun, given: dict) -> str:
    """The teacher's recipe where it is not simply the student's own choice: the recipe keys the student's
    config or ``--set`` gave and the teacher inherited (the teacher rule: a teacher takes the student's
    *given* recipe and augmentation keys unless ``teacher.<key>`` sets its own; a profile's ``base`` is
    given to both), and every key whose value differs from the student's."""
    given_teacher = given.get("teacher") or {}
    inherited, differs = [], []
    for key in ("recipe", *OPTIM_FIELDS, *AUGMENT_FIELDS):
        value = _recipe_value(teacher, key)
        if key in given and key not in given_teacher and key != "recipe" and getattr(teacher, key) == getattr(student, key):
            inherited.append(f"{key} {value}")
        elif getattr(teacher, key) != getattr(student, key):
            source = "teacher." + key if key in given_teacher else f"the {teacher.recipe} recipe's"
            differs.append(f"{key} {value} ({source}; the student's {_recipe_value(student, key)})")
    parts = []
    if inherited:
        parts.append(f"{', '.join(inherited)}: the student's, inherited (set teacher.<key> for its own)")
    if differs:
        parts.append(", ".join(differs))
    return "     teacher recipe: " + ("; ".join(parts) if parts else "the same as the student's")


def plan_lines(store: RunStore, cfg: ResolvedRun | RunConfig, given: dict) -> list[str]:
    """What ``train`` will do, teacher first: each run's id, what it trains and its state in the store."""
    cfg = resolve(cfg)
    chain = [cfg]
    while chain[-1].has_teacher_run:
        chain.append(chain[-1].teacher)
    lines = [f"plan ({store.runs_dir}):"]
    for i, (depth, c) in enumerate(reversed(list(enumerate(chain))), 1):
        status = store.status(c)
        owner = store.owner(c) if status != "finished" else None
        state = {"finished": "finished: reused, not trained", "partial": "partial: resumes from its last epoch",
                 "new": "new: trained now"}[status]
        if owner is not None:
            state = f"being trained by process {owner[1]} on {owner[0]}: waited for, then reused"
        role = "teacher" if c is not cfg else cfg.method
        lines.append(f"  {i}. {role:<7} {c.run_id}  {_describe_run(c)}  [{state}]")
        if c is not cfg:
            lines.append(teacher_recipe_line(chain[depth - 1], c, given if depth == 1 else {}))
    return lines
