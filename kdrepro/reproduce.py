"""Run the notebooks headless with papermill: ``make reproduce [PROFILE=demo] [NB=03]``.

::

    python -m kdrepro.reproduce --profile demo [--notebook 03] [--results results] [--data-root DIR]
                                [--seeds 0 1 2] [--device auto] [--store-in-place] [--jobs N [--train-only]]

``--jobs N`` first trains every run of the profile that is not in the run store yet with N parallel
worker processes (:class:`kdrepro.executors.LocalExecutor`); the notebooks then read every run from the store. Without it
the notebooks train missing runs themselves, one at a time. ``--train-only`` stops after that step.

``--executor slurm --slurm-partition P [--gpus-per-job 1] [--time 240] ...`` submits those runs to a
Slurm cluster through submitit instead (:mod:`kdrepro.executors`: job arrays, afterok dependencies,
requeue on preemption) and returns; calling it again prints which runs are pending, running, finished
or failed, submits the ones that are neither finished nor in the queue, and runs the notebooks once every
run is finished. ``--dry-run`` prints every run with the runs it waits for and, with an executor, what
would be submitted with which resources.

Every notebook ``notebooks/0*.ipynb`` (or the one named by ``--notebook``: a prefix such as ``03`` or a
file name) runs in a fresh ``python3`` kernel with its working directory in ``notebooks/`` and the
parameters above injected. The executed copies go to ``<results>/<profile>/notebooks/``; the notebooks
themselves write their tables to ``<results>/<profile>/tables/`` and figures to
``<results>/<profile>/figures/``, and share the run store ``<results>/runs`` (finished runs are reused).

``--store-in-place`` (``make notebooks``) writes the executed notebooks back into ``notebooks/`` instead,
without papermill's timing metadata: those stored outputs are what ``pytest --nbval`` compares against.
It only accepts the notebooks' own default parameters, so that the stored notebooks and nbval agree.

Each executed notebook is written to a temporary file and moved into place only when it has run to the
end; a failing notebook is saved as ``<name>.failed.ipynb`` beside the outputs, the error names the
notebook and the cell, and the run stops there.
"""
from __future__ import annotations

import argparse
import ast
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .config import ConfigError
from .executors import EXECUTORS, ExecutorError, RunsFailedError, SlurmOptions
from .experiments import ProfileError, load_profile
from .kernel_log import quiet_kernel_noise
from .reproduce_args import DESCRIPTION, add_arguments  # noqa: F401  (the command line's arguments)

KERNEL = "python3"


class ReproduceError(RuntimeError):
    """A notebook that could not be found or did not run to the end."""


@dataclass
class NotebookRun:
    name: str
    seconds: float
    output: Path


def find_notebooks(notebooks_dir: Path, which: str | None = None) -> list[Path]:
    """The notebooks ``0*.ipynb`` in name order, or the one whose name starts with ``which``."""
    found = sorted(notebooks_dir.glob("0*.ipynb"))
    if not found:
        raise ReproduceError(
            f"no notebooks 0*.ipynb in {notebooks_dir}: the notebooks are not part of the installed package; they "
            "are the notebooks/ folder of the kdrepro source repository: clone it and run `make reproduce` in the "
            "clone (or pass --notebooks-dir DIR)")
    if which is None:
        return found
    chosen = [p for p in found if p.name == which or p.stem == which or p.name.startswith(which)]
    if len(chosen) != 1:
        names = ", ".join(p.stem for p in found)
        what = "matches no notebook" if not chosen else f"is ambiguous ({', '.join(p.stem for p in chosen)})"
        raise ReproduceError(f"--notebook {which!r} {what}; available: {names}")
    return chosen


def require_papermill() -> None:
    """Raise :class:`ReproduceError` when the ``notebooks`` extra (papermill, a Jupyter kernel) is missing."""
    import importlib.util

    missing = [m for m in ("papermill", "ipykernel") if importlib.util.find_spec(m) is None]
    if missing:
        raise ReproduceError(f"running the notebooks needs {' and '.join(missing)}: "
                             "pip install 'kdrepro[notebooks]' (make setup installs it)")


def default_notebooks_dir() -> Path:
    """``./notebooks`` when it exists, else the ``notebooks/`` of the checkout this package lives in."""
    here = Path("notebooks")
    return here if here.is_dir() else Path(__file__).resolve().parent.parent / "notebooks"


def notebook_defaults(path: Path) -> dict[str, object]:
    """The values of a notebook's ``parameters`` cell."""
    import papermill

    out = {}
    for name, param in papermill.inspect_notebook(str(path)).items():
        try:
            out[name] = ast.literal_eval(param["default"])
        except (ValueError, SyntaxError):
            out[name] = param["default"]
    return out


def _finalize(path: Path, final: Path, strip_metadata: bool) -> None:
    """Point papermill's ``output_path`` at the final file, or (``strip_metadata``) drop papermill's and
    nbclient's timing metadata, which would change at every refresh of the stored notebooks."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    if strip_metadata:
        nb.metadata.pop("papermill", None)
        for cell in nb.cells:
            cell.metadata.pop("papermill", None)
            cell.metadata.pop("execution", None)
    elif "papermill" in nb.metadata:
        nb.metadata.papermill["output_path"] = str(final)
    nbformat.write(nb, path)


def run_notebook(path: Path, out_dir: Path, parameters: dict, failed_dir: Path, strip_metadata: bool = False,
                 progress: bool = False) -> NotebookRun:
    """Execute one notebook into ``out_dir`` atomically; on failure save it as ``failed_dir/<name>.failed.ipynb``
    and raise :class:`ReproduceError` naming the notebook and the cell."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    out_dir.mkdir(parents=True, exist_ok=True)
    remove_abandoned(out_dir, path.stem)
    final = out_dir / path.name
    tmp = out_dir / f".{path.stem}.{os.getpid()}.running.ipynb"
    failed = failed_dir / f"{path.stem}.failed.ipynb"
    start = time.perf_counter()
    try:
        with quiet_kernel_noise():  # the kernel's harmless warnings; its errors still show
            papermill.execute_notebook(str(path), str(tmp), parameters=parameters, kernel_name=KERNEL,
                                       cwd=str(path.parent), progress_bar=progress, log_output=False)
    except PapermillExecutionError as err:
        failed.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, failed)
        raise ReproduceError(f"notebook {path.name} failed in cell [{err.exec_count}] ({err.ename}: {err.evalue}).\n"
                             f"The executed notebook, with the traceback, is {failed}.") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        _finalize(tmp, final, strip_metadata)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return NotebookRun(path.stem, time.perf_counter() - start, final)


def remove_abandoned(out_dir: Path, stem: str) -> list[Path]:
    """Delete ``.<stem>.<pid>.running.ipynb`` files of ``out_dir`` whose process (on this machine) is gone: a
    ``reproduce`` killed while it executed the notebook. Returns what was removed."""
    removed = []
    for tmp in out_dir.glob(f".{stem}.*.running.ipynb"):
        pid = tmp.name[len(stem) + 2:-len(".running.ipynb")]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # still running
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _count_new(folder: Path, since: float) -> int:
    if not folder.is_dir():
        return 0
    return sum(1 for p in folder.iterdir() if p.is_file() and p.stat().st_mtime >= since)


def reproduce(profile: str, notebook: str | None = None, results: str = "results", data_root: str | None = None,
              seeds: list[int] | None = None, device: str = "auto", store_in_place: bool = False,
              notebooks_dir: str | None = None, progress: bool | None = None, jobs: int = 0,
              train_only: bool = False, executor: str = "local",
              slurm: SlurmOptions | None = None, train: bool = True) -> list[NotebookRun]:
    """Run the notebooks for ``profile`` (after training its runs with ``jobs`` workers when ``jobs > 0``, or
    through ``executor``); print progress and a summary; return what ran. With ``executor="slurm"`` the
    runs are submitted and, unless every run is finished already, no notebook runs (call it again)."""
    from .executors import launch, make_executor, require_submitit

    t0 = time.time()
    prof = load_profile(profile)
    if executor not in EXECUTORS:
        raise ReproduceError(f"unknown executor {executor!r}; choose from {', '.join(EXECUTORS)}")
    if not train and (jobs > 0 or train_only):
        raise ReproduceError("--no-train cannot be combined with --jobs or --train-only")
    if train_only and jobs < 1 and executor == "local":
        raise ReproduceError("--train-only needs --jobs N (N >= 1)")
    if executor in ("slurm", "submitit-local"):
        if executor == "slurm" and slurm is None:
            raise ExecutorError("--executor slurm needs --slurm-partition P (the Slurm partition to submit to)")
        require_submitit(f"--executor {executor}")
    nb_dir = Path(notebooks_dir) if notebooks_dir else default_notebooks_dir()
    if not train_only:  # before any training: a missing folder or extra is reported at once
        notebooks = find_notebooks(nb_dir, notebook)
        require_papermill()
    if jobs > 0 or executor != "local":
        from .experiments import Experiment

        exp = Experiment(prof, results_dir=results, data_root=data_root, seeds=seeds, device=device)
        runner = make_executor(executor, jobs, slurm)
        exp.check_matched_steps()
        configs = exp.all_configs()
        launch(configs, results, runner, logs_dir=exp.out_dir / "logs", jobs_dir=exp.out_dir / "jobs",
               log=lambda msg: print(msg, flush=True))
        if not runner.blocking:
            unfinished = sum(1 for c in configs if exp.store.status(c) != "finished")
            if unfinished:
                print(f"kdrepro.reproduce: {unfinished} of {len(configs)} runs of profile {prof.name} are not finished "
                      "yet; call this command again to see their state (or `kdrepro runs`), and again once they have "
                      "finished to run the notebooks", flush=True)
                return []
        if train_only:
            return []
    results_dir = Path(results).absolute()
    out_root = results_dir / prof.name
    profile_arg = profile if Path(profile).suffix not in (".yaml", ".yml") else str(Path(profile).absolute())
    parameters = {"profile": profile_arg, "results_dir": os.path.relpath(results_dir, nb_dir.absolute()),
                  "data_root": str(Path(data_root).absolute()) if data_root else None,
                  "seeds": list(seeds) if seeds else None, "device": device, "train": train}
    if store_in_place:
        defaults = notebook_defaults(notebooks[0])
        changed = {k: v for k, v in parameters.items() if defaults.get(k) != v}
        if changed:
            raise ReproduceError(
                f"--store-in-place writes the outputs that nbval compares against, so it runs the notebooks with "
                f"their default parameters only; these differ: {changed} (defaults: {defaults})")
        parameters = {}
    if progress is None:  # a bar on a terminal; a line per cell elsewhere (logs, a notebook, CI)
        progress = True if sys.stderr.isatty() else {
            "file": sys.stdout, "ascii": True, "mininterval": 0,
            "bar_format": "    {desc}: cell {n_fmt}/{total_fmt}, {elapsed}\n"}
    tables, figures = out_root / "tables", out_root / "figures"
    before = {d: _hashes(d) for d in (tables, figures)}
    print(f"kdrepro.reproduce: profile {prof.name} ({prof.expected_time}); {len(notebooks)} notebook(s); "
          f"runs in {results_dir / 'runs'}", flush=True)
    done = []
    for i, path in enumerate(notebooks, 1):
        print(f"[{i}/{len(notebooks)}] {path.stem} ...", flush=True)
        try:
            run = run_notebook(path, nb_dir if store_in_place else out_root / "notebooks", parameters,
                               failed_dir=out_root / "notebooks", strip_metadata=store_in_place, progress=progress)
        except ReproduceError as err:
            if train or "MissingRunsError" not in str(err):
                raise
            (out_root / "notebooks" / f"{path.stem}.failed.ipynb").unlink(missing_ok=True)
            print(f"[{i}/{len(notebooks)}] {path.stem} skipped: {str(err).split('MissingRunsError: ')[-1].split(').')[0]}",
                  flush=True)
            stale = remove_outputs(out_root, path.stem)
            if stale:
                print(f"    removed its {len(stale)} earlier output(s) (executed notebook, tables, figures): they "
                      "showed runs that are not in the store", flush=True)
            continue
        done.append(run)
        print(f"[{i}/{len(notebooks)}] {path.stem} done in {run.seconds:.0f} s -> {run.output}", flush=True)
    total = time.time() - t0
    print(f"\nkdrepro.reproduce: {len(done)} notebook(s) for profile {prof.name} in {total / 60:.1f} min "
          f"({total:.0f} s)")
    for run in done:
        print(f"  {run.name:<28} {run.seconds:6.0f} s  {run.output}")
    for kind, folder in (("tables", tables), ("figures", figures)):
        for line in changes_report(kind, folder, before[folder], t0):
            print(line)
    return done


def remove_outputs(out_root: Path, stem: str) -> list[Path]:
    """Remove what an earlier execution of notebook ``stem`` wrote under ``out_root``: the executed notebook
    and the tables and figures named with its number (``04_...`` for ``04_ablations``). Called when the
    notebook is skipped because none of its runs is in the store (``--no-train``), so that no table is left
    behind that shows runs the store no longer holds."""
    prefix = stem.split("_", 1)[0] + "_"
    found = [out_root / "notebooks" / f"{stem}.ipynb"]
    for kind in ("tables", "figures"):
        folder = out_root / kind
        found += sorted(folder.glob(f"{prefix}*")) if folder.is_dir() else []
    removed = [p for p in found if p.is_file()]
    for p in removed:
        p.unlink()
    return removed


def _hashes(folder: Path) -> dict[str, str]:
    import hashlib

    if not folder.is_dir():
        return {}
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _committed(folder: Path) -> dict[str, str] | None:
    """``{file name: state}`` against git's HEAD (``changed``, ``new``) for the files under ``folder``; None
    when ``folder`` is not in a git checkout."""
    import subprocess

    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", "."], cwd=folder,
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    ignored = subprocess.run(["git", "check-ignore", "-q", "."], cwd=folder, capture_output=True, timeout=30)
    if ignored.returncode == 0:  # git does not track this folder: compare with the files before the run
        return None
    states = {}
    for line in out.stdout.splitlines():
        code, name = line[:2], Path(line[3:].strip().strip('"')).name
        states[name] = "new" if code == "??" else "changed"
    return states


def changes_report(kind: str, folder: Path, before: dict[str, str], since: float) -> list[str]:
    """What a reproduction did to ``folder``: files written, and which differ from the committed version (in
    a git checkout) or else from the files there before the run."""
    after = _hashes(folder)
    written = _count_new(folder, since)
    committed = _committed(folder) if folder.is_dir() else None
    if committed is not None:
        changed = sorted(n for n in after if committed.get(n) == "changed")
        new = sorted(n for n in after if committed.get(n) == "new")
        against = "the committed version"
    else:
        changed = sorted(n for n in after if n in before and before[n] != after[n])
        new = sorted(n for n in after if n not in before)
        against = "the files there before this run"
    same = len(after) - len(changed) - len(new)
    lines = [f"  {kind}: {written} file(s) written in {folder}; against {against}: {same} identical, "
             f"{len(changed)} changed, {len(new)} new"]
    for label, names in (("changed", changed), ("new", new)):
        if names:
            shown = ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")
            lines.append(f"    {label}: {shown}")
    return lines


_SLURM_FLAGS = {"slurm_partition": "--slurm-partition", "gpus_per_job": "--gpus-per-job", "cpus_per_job": "--cpus-per-job",
                "time": "--time", "mem_gb": "--mem-gb", "requeues": "--requeues", "slurm_extra": "--slurm-extra"}


def slurm_options(args) -> SlurmOptions | None:
    """The :class:`SlurmOptions` of the command line (None unless ``--executor slurm``); a slurm-only option
    with another executor, a missing partition or a bad value is a :class:`ExecutorError`."""
    given = [flag for name, flag in _SLURM_FLAGS.items() if getattr(args, name, None) not in (None, [])]
    executor = getattr(args, "executor", "local")
    if executor != "slurm":
        if given:
            raise ExecutorError(f"{', '.join(given)}: only for --executor slurm (the executor is {executor})")
        return None
    if not args.slurm_partition:
        raise ExecutorError("--executor slurm needs --slurm-partition P (the Slurm partition to submit to)")
    extra = {}
    for item in args.slurm_extra:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or key.strip().startswith("-"):
            raise ExecutorError(f"--slurm-extra {item!r}: give KEY=VALUE, e.g. account=myproject")
        extra[key.strip()] = value.strip()
    opts = SlurmOptions(args.slurm_partition, array_parallelism=args.jobs if args.jobs > 0 else None, extra=extra)
    for name, attr in (("gpus_per_job", "gpus_per_job"), ("cpus_per_job", "cpus_per_job"), ("time", "time_min"),
                       ("mem_gb", "mem_gb"), ("requeues", "requeues")):
        if getattr(args, name) is not None:
            setattr(opts, attr, getattr(args, name))
    return opts.check()


def run_from_args(args) -> int:
    from .plugins import PluginError, use_plugins

    try:
        if args.results is None:  # as train and runs: $KDREPRO_RESULTS, else results/
            from .runs import default_results_root

            args.results = str(default_results_root())
        elif not args.results.strip():
            raise ConfigError("--results '': empty path; give a results folder (default: results/)")
        use_plugins(getattr(args, "plugins", []))
        if args.jobs < 0:
            raise ReproduceError(f"--jobs must be 0 or more, got {args.jobs}")
        slurm = slurm_options(args)
        if args.dry_run:
            return dry_run(args.profile, args.results, args.data_root, args.seeds, args.device,
                           executor=args.executor, jobs=args.jobs, slurm=slurm)
        reproduce(args.profile, args.notebook, args.results, args.data_root, args.seeds, args.device,
                  args.store_in_place, args.notebooks_dir, jobs=args.jobs, train_only=args.train_only,
                  train=not args.no_train,
                  executor=args.executor, slurm=slurm)
    except (ProfileError, ConfigError) as err:  # a bad profile or value is a bad configuration (docs/errors.md)
        print(f"kdrepro.reproduce: error: {err}", file=sys.stderr)
        return 2
    except (ReproduceError, RunsFailedError, ExecutorError, PluginError) as err:
        print(f"kdrepro.reproduce: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kdrepro.reproduce: interrupted; finished runs are kept in the run store and reused next time",
              file=sys.stderr)
        return 130
    return 0


def dry_run(profile: str, results: str = "results", data_root: str | None = None, seeds: list[int] | None = None,
            device: str = "auto", executor: str = "local", jobs: int = 0, slurm: SlurmOptions | None = None) -> int:
    """Print the profile's plan: every run (teachers first), its state (in the store, or its submitted job's),
    the runs it waits for, and what ``--jobs``/``--executor`` would train or submit with which resources.
    Loads no data and submits nothing (so it needs neither the data sets nor submitit)."""
    from .executors import describe_plan, make_executor
    from .experiments import Experiment

    exp = Experiment(profile, results_dir=results, data_root=data_root, seeds=seeds, device=device)
    runner = make_executor(executor, jobs, slurm) if executor != "local" or jobs > 0 else None
    configs = exp.all_configs()
    print(f"profile {exp.profile.name}: {len(configs)} runs in {exp.store.runs_dir}")
    if runner is None:
        print("no --jobs: the notebooks train the runs that are not finished one at a time, in this order")
    for line in describe_plan(configs, exp.store, runner, exp.out_dir / "jobs"):
        print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdrepro.reproduce", description=DESCRIPTION)
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
