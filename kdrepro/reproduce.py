"""Run the notebooks headless with papermill: ``make reproduce [PROFILE=demo] [NB=03]``.

::

    python -m kdrepro.reproduce --profile demo [--notebook 03] [--results results] [--data-root DIR]
                                [--seeds 0 1 2] [--device auto] [--store-in-place] [--jobs N [--train-only]]

``--jobs N`` first trains every run of the profile that is not in the run store yet with N parallel
worker processes (:mod:`kdrepro.pretrain`); the notebooks then read every run from the store. Without it
the notebooks train missing runs themselves, one at a time. ``--train-only`` stops after that step.

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

from .experiments import ProfileError, load_profile
from .pretrain import PretrainError

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
        raise ReproduceError(f"no notebooks 0*.ipynb in {notebooks_dir}")
    if which is None:
        return found
    chosen = [p for p in found if p.name == which or p.stem == which or p.name.startswith(which)]
    if len(chosen) != 1:
        names = ", ".join(p.stem for p in found)
        what = "matches no notebook" if not chosen else f"is ambiguous ({', '.join(p.stem for p in chosen)})"
        raise ReproduceError(f"--notebook {which!r} {what}; available: {names}")
    return chosen


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
    final = out_dir / path.name
    tmp = out_dir / f".{path.stem}.{os.getpid()}.running.ipynb"
    failed = failed_dir / f"{path.stem}.failed.ipynb"
    start = time.perf_counter()
    try:
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


def _count_new(folder: Path, since: float) -> int:
    if not folder.is_dir():
        return 0
    return sum(1 for p in folder.iterdir() if p.is_file() and p.stat().st_mtime >= since)


def reproduce(profile: str, notebook: str | None = None, results: str = "results", data_root: str | None = None,
              seeds: list[int] | None = None, device: str = "auto", store_in_place: bool = False,
              notebooks_dir: str | None = None, progress: bool | None = None, jobs: int = 0,
              train_only: bool = False) -> list[NotebookRun]:
    """Run the notebooks for ``profile`` (after training its runs with ``jobs`` workers when ``jobs > 0``);
    print progress and a summary; return what ran."""
    t0 = time.time()
    prof = load_profile(profile)
    if train_only and jobs < 1:
        raise ReproduceError("--train-only needs --jobs N (N >= 1)")
    if jobs > 0:
        from .experiments import Experiment
        from .pretrain import pretrain

        exp = Experiment(prof, results_dir=results, data_root=data_root, seeds=seeds, device=device)
        exp.check_matched_steps()
        pretrain(exp.all_configs(), results, jobs=jobs, logs_dir=exp.out_dir / "logs",
                 log=lambda msg: print(msg, flush=True))
        if train_only:
            return []
    nb_dir = Path(notebooks_dir) if notebooks_dir else default_notebooks_dir()
    notebooks = find_notebooks(nb_dir, notebook)
    results_dir = Path(results).absolute()
    out_root = results_dir / prof.name
    profile_arg = profile if Path(profile).suffix not in (".yaml", ".yml") else str(Path(profile).absolute())
    parameters = {"profile": profile_arg, "results_dir": os.path.relpath(results_dir, nb_dir.absolute()),
                  "data_root": str(Path(data_root).absolute()) if data_root else None,
                  "seeds": list(seeds) if seeds else None, "device": device}
    if store_in_place:
        defaults = notebook_defaults(notebooks[0])
        changed = {k: v for k, v in parameters.items() if defaults.get(k) != v}
        if changed:
            raise ReproduceError(
                f"--store-in-place writes the outputs that nbval compares against, so it runs the notebooks with "
                f"their default parameters only; these differ: {changed} (defaults: {defaults})")
        parameters = {}
    progress = sys.stderr.isatty() if progress is None else progress
    print(f"kdrepro.reproduce: profile {prof.name} ({prof.expected_time}); {len(notebooks)} notebook(s); "
          f"runs in {results_dir / 'runs'}", flush=True)
    done = []
    for i, path in enumerate(notebooks, 1):
        print(f"[{i}/{len(notebooks)}] {path.stem} ...", flush=True)
        run = run_notebook(path, nb_dir if store_in_place else out_root / "notebooks", parameters,
                           failed_dir=out_root / "notebooks", strip_metadata=store_in_place, progress=progress)
        done.append(run)
        print(f"[{i}/{len(notebooks)}] {path.stem} done in {run.seconds:.0f} s -> {run.output}", flush=True)
    total = time.time() - t0
    tables, figures = out_root / "tables", out_root / "figures"
    print(f"\nkdrepro.reproduce: {len(done)} notebook(s) for profile {prof.name} in {total / 60:.1f} min "
          f"({total:.0f} s)")
    for run in done:
        print(f"  {run.name:<28} {run.seconds:6.0f} s  {run.output}")
    print(f"  tables written:  {_count_new(tables, t0):3d} files in {tables}")
    print(f"  figures written: {_count_new(figures, t0):3d} files in {figures}")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdrepro.reproduce",
                                     description="Run the notebooks headless with papermill for one profile.")
    parser.add_argument("--profile", default="demo", help="smoke, demo, cpu, paper or a profile .yaml (default demo)")
    parser.add_argument("--notebook", default=None, metavar="NB", help="run one notebook: a prefix such as 03, or its name")
    parser.add_argument("--results", default="results", metavar="DIR",
                        help="results folder: runs/ and <profile>/{notebooks,tables,figures} (default ./results)")
    parser.add_argument("--data-root", default=None, metavar="DIR", help="where the data sets are (default $KDREPRO_DATA, then ./data)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="replace the profile's seeds")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--store-in-place", action="store_true",
                        help="write the executed notebooks back into notebooks/ (make notebooks; nbval's reference)")
    parser.add_argument("--notebooks-dir", default=None, metavar="DIR", help="the notebooks' folder (default ./notebooks)")
    parser.add_argument("--jobs", type=int, default=0, metavar="N",
                        help="first train the profile's missing runs with N parallel workers (default 0: the "
                             "notebooks train them one at a time)")
    parser.add_argument("--train-only", action="store_true", help="with --jobs: train the runs, run no notebook")
    args = parser.parse_args(argv)
    try:
        reproduce(args.profile, args.notebook, args.results, args.data_root, args.seeds, args.device,
                  args.store_in_place, args.notebooks_dir, jobs=args.jobs, train_only=args.train_only)
    except (ProfileError, ReproduceError, PretrainError) as err:
        print(f"kdrepro.reproduce: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kdrepro.reproduce: interrupted; finished runs are kept in the run store and reused next time",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
