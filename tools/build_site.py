"""Stage the browsable site and build it: ``python tools/build_site.py [--no-build]`` (``make site``).

The staging folder (``build/site-src``) mirrors the repository's layout, so every relative link of the
README and of docs/ works unchanged: ``index.md`` is the README, ``docs/`` the pages, ``results/<profile>/``
each profile's executed notebooks and figures, ``notebooks/`` the stored notebooks of the ``smoke``
profile. The navigation is written into a copy of ``mkdocs.yml``; ``mkdocs build --strict`` then fails on
any broken link or anchor.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
STAGE = ROOT / "build" / "site-src"
PROFILES = ("cpu300", "cpu", "demo")
RESULTS = ("results-cpu300.md", "analysis-plan-cpu300.md", "results-cpu.md", "results-demo.md")


def _title(path: Path) -> str:
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text())["cells"]
        text = "".join(cells[0]["source"]) if cells else path.stem
    else:
        text = path.read_text()
    m = re.search(r"^# (.+)$", text, re.M)
    return m.group(1).strip() if m else path.stem


def stage() -> list:
    """Copy what the site shows into STAGE; return the navigation."""
    shutil.rmtree(STAGE, ignore_errors=True)
    (STAGE / "docs").mkdir(parents=True)
    shutil.copy(ROOT / "README.md", STAGE / "index.md")
    for page in sorted((ROOT / "docs").glob("*.md")):
        shutil.copy(page, STAGE / "docs" / page.name)
    notebooks = []
    for profile in PROFILES:
        src = ROOT / "results" / profile
        for sub, pattern in (("notebooks", "*.ipynb"), ("figures", "*.png")):
            for f in sorted((src / sub).glob(pattern)):
                (STAGE / "results" / profile / sub).mkdir(parents=True, exist_ok=True)
                shutil.copy(f, STAGE / "results" / profile / sub / f.name)
        pages = sorted((STAGE / "results" / profile / "notebooks").glob("*.ipynb"))
        if pages:
            notebooks.append({f"`{profile}`": [{_title(p): p.relative_to(STAGE).as_posix()} for p in pages]})
    (STAGE / "notebooks").mkdir()
    for f in sorted((ROOT / "notebooks").glob("[0-9]*.ipynb")):
        shutil.copy(f, STAGE / "notebooks" / f.name)
    notebooks.append({"`smoke` (stored outputs)": [{_title(p): p.relative_to(STAGE).as_posix()}
                                                    for p in sorted((STAGE / "notebooks").glob("*.ipynb"))]})
    docs = sorted((STAGE / "docs").glob("*.md"))
    results = [{_title(STAGE / "docs" / n): f"docs/{n}"} for n in RESULTS if (STAGE / "docs" / n).exists()]
    other = [{_title(p): f"docs/{p.name}"} for p in docs if p.name not in RESULTS]
    return [{"Home": "index.md"}, {"Results": results}, {"Notebooks": notebooks}, {"Documentation": other}]


def main(argv: list[str]) -> int:
    nav = stage()
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    config.update(nav=nav, docs_dir=str(STAGE), site_dir=str(ROOT / "build" / "site"))
    staged = ROOT / "build" / "mkdocs.yml"
    staged.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    print(f"staged {sum(1 for _ in STAGE.rglob('*') if _.is_file())} files in {STAGE}")
    if "--no-build" in argv:
        return 0
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-f", str(staged)]).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
