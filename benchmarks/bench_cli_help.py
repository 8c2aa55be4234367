"""Start-up time of ``kdrepro --help`` and of each subcommand's ``--help``: the median wall time of N fresh
processes of the installed ``kdrepro`` command (``python benchmarks/bench_cli_help.py [N]``)."""
from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = [[], ["train"], ["runs"], ["show"], ["download"], ["migrate"], ["export"], ["reproduce"]]


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 5
    exe = shutil.which("kdrepro") or str(Path(sys.executable).with_name("kdrepro"))
    print(f"{exe}, median and max of {n} runs each")
    for words in COMMANDS:
        times = []
        for _ in range(n):
            start = time.perf_counter()
            subprocess.run([exe, *words, "--help"], stdout=subprocess.DEVNULL, check=True)
            times.append(time.perf_counter() - start)
        print(f"  kdrepro {' '.join(words + ['--help']):<20} {statistics.median(times):.2f} s (max {max(times):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
