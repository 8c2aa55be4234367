"""The arguments of ``kdrepro reproduce`` (and ``python -m kdrepro.reproduce``), kept apart from the
notebook runner so that ``kdrepro --help`` builds its parser without importing torch, pandas or papermill."""
from __future__ import annotations

import argparse

#: the executors' names (:data:`kdrepro.executors.EXECUTORS`; ``tests/test_cli_help.py`` checks they agree)
EXECUTORS = ("local", "slurm", "submitit-local")

DESCRIPTION = ("Run the notebooks headless with papermill for one profile (first training its missing runs in "
               "parallel with --jobs N), then say which tables and figures changed.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="demo", help="smoke, demo, cpu, cpu300, paper or a profile .yaml (default demo)")
    parser.add_argument("--notebook", default=None, metavar="NB", help="run one notebook: a prefix such as 03, or its name")
    parser.add_argument("--results", default=None, metavar="DIR",
                        help="results folder: runs/ and <profile>/{notebooks,tables,figures} (default: "
                             "$KDREPRO_RESULTS or ./results)")
    parser.add_argument("--data-root", default=None, metavar="DIR", help="where the data sets are (default $KDREPRO_DATA, then ./data)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="replace the profile's seeds")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--store-in-place", action="store_true",
                        help="write the executed notebooks back into notebooks/ (make notebooks; nbval's reference)")
    parser.add_argument("--notebooks-dir", default=None, metavar="DIR", help="the notebooks' folder (default ./notebooks)")
    parser.add_argument("--jobs", type=int, default=0, metavar="N",
                        help="first train the profile's missing runs with N parallel workers (default 0: the "
                             "notebooks train them one at a time); with --executor slurm: at most N running runs "
                             "per job array (default: no limit)")
    parser.add_argument("--train-only", action="store_true", help="with --jobs: train the runs, run no notebook")
    parser.add_argument("--no-train", action="store_true",
                        help="the notebooks read finished runs only and train nothing; tables and figures of a "
                             "study with missing runs say which runs are missing; a notebook with none of its runs "
                             "is skipped and its earlier tables, figures and executed copy are removed")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE", dest="plugins",
                        help="import MODULE first (it registers loss terms, scores, ...); repeatable; the workers, "
                             "jobs and notebooks load it too (docs/extending.md, Plugins)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print every run of the profile (teachers first) with its state and the runs it waits "
                             "for, and what --jobs/--executor would train or submit with which resources; train nothing")
    cluster = parser.add_argument_group(
        "executor", "where --jobs trains the runs: this machine (local) or a Slurm cluster (slurm, through submitit: "
                    "pip install 'kdrepro[cluster]'); see kdrepro/executors.py")
    cluster.add_argument("--executor", choices=EXECUTORS, default="local",
                         help="local (default): --jobs worker processes here; slurm: submit every run as a Slurm job "
                              "and return (call again for their state); submitit-local: the Slurm job code path run "
                              "by submitit's LocalExecutor here, to try it without a cluster")
    cluster.add_argument("--slurm-partition", default=None, metavar="P", help="Slurm partition (required with slurm)")
    cluster.add_argument("--gpus-per-job", type=int, default=None, metavar="N", help="GPUs per run (default 1)")
    cluster.add_argument("--cpus-per-job", type=int, default=None, metavar="N", help="CPU cores per run (default 4)")
    cluster.add_argument("--time", type=int, default=None, metavar="MIN",
                         help="time limit of a job in minutes (default 240); a run that needs longer is requeued "
                              "and resumes from its checkpoint")
    cluster.add_argument("--mem-gb", type=float, default=None, metavar="GB", help="memory per job (default: the partition's)")
    cluster.add_argument("--requeues", type=int, default=None, metavar="N",
                         help="how often a job that reaches --time is requeued (default 10; preemptions do not count)")
    cluster.add_argument("--slurm-extra", action="append", default=[], metavar="KEY=VALUE",
                         help="another sbatch option for every job, e.g. account=proj or qos=normal (repeatable)")
