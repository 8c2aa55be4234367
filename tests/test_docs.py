"""The README and the pages under docs/: short front door, every page one click away, links that resolve,
command examples that parse, run ids that exist, and a configuration reference that matches the code."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README] + sorted(DOCS.glob("*.md"))
RUN_ID = re.compile(r"\b(?:ce|kd|slkd)-[a-z0-9_.-]+?-s\d+-[0-9a-f]{4,10}\b")


def _links(text: str) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", text)


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def test_readme_is_a_short_front_door_with_a_table_of_contents():
    text = README.read_text()
    assert len(text.splitlines()) <= 200, f"README.md has {len(text.splitlines())} lines (at most 200)"
    assert re.search(r"^## Contents$", text, re.M), "README.md has no '## Contents' section"
    for phrase in ("issue ", "the brief", "this machine", "session", "measured here"):
        assert phrase not in text.lower(), f"README.md refers to its own making: {phrase!r}"


def test_every_docs_page_is_one_click_from_the_readme():
    linked = {(README.parent / link.split("#")[0]).resolve() for link in _links(README.read_text())}
    missing = [p.name for p in DOCS.glob("*.md") if p.resolve() not in linked]
    assert not missing, f"docs pages not linked from README.md: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_and_anchors_resolve(page):
    text = page.read_text()
    for link in _links(text):
        if re.match(r"[a-z]+:", link):
            continue
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        assert path.exists(), f"{page.name}: link to {link} does not exist"
        if anchor and path.suffix == ".md":
            anchors = {_anchor(h) for h in re.findall(r"^#+ (.*)$", path.read_text(), re.M)}
            assert anchor in anchors, f"{page.name}: no heading for #{anchor} in {path.name}"


def _examples() -> list[tuple[str, list[str]]]:
    """Every ``kdrepro ...`` command in a bash block of the README and the docs (continuations joined)."""
    out = []
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split("#")[0].strip()
                m = re.match(r"(?:\.venv/bin/)?kdrepro\s+(.*)", line)
                if m:
                    words = shlex.split(re.sub(r"[\[\]]|\.\.\.", "", m.group(1)))
                    out.append((f"{page.name}: {line}", words))
    return out


def test_there_are_command_examples_to_check():
    pages = {name.split(":")[0] for name, _ in _examples()}
    assert {"README.md", "cli.md", "cluster.md"} <= pages, pages


@pytest.mark.parametrize("where,words", _examples(), ids=[w for w, _ in _examples()])
def test_every_kdrepro_example_parses(where, words):
    from kdrepro.cli import make_parser

    try:
        make_parser().parse_args(words)
    except SystemExit as exit_:
        assert exit_.code == 0 and "--help" in words, f"{where}: argparse refused it (exit {exit_.code})"


def test_every_run_id_named_exists_after_make_reproduce():
    """A run id (or unique id prefix) named in the README or the docs is a committed run, or one of the
    default profile's runs, which ``make reproduce`` trains."""
    from kdrepro.experiments import Experiment

    committed = {p.name for p in (ROOT / "results" / "runs").iterdir() if (p / "summary.json").exists()}
    demo = {c.run_id for c in Experiment("demo", results_dir=ROOT / "results").all_configs()}
    known = committed | demo
    named = {(page.name, m) for page in PAGES for m in RUN_ID.findall(page.read_text())}
    assert len(named) > 50
    for page, run_id in sorted(named):
        matches = [k for k in known if k.startswith(run_id)]
        assert len(matches) == 1, f"{page} names {run_id}: {len(matches)} runs match"


def test_config_reference_is_generated_from_the_schema():
    from kdrepro import config_reference

    assert config_reference.PAGE.read_text() == config_reference.render(), (
        "docs/config-reference.md is stale: run `python -m kdrepro.config_reference`")


def test_config_reference_lists_every_run_key_and_term_parameter():
    """Against the models themselves: a key added to the schema appears on the page."""
    from kdrepro.config import RunConfig
    from kdrepro.terms import TERMS

    text = (DOCS / "config-reference.md").read_text()
    for key in RunConfig.model_fields:
        assert f"| `{key}` |" in text, key
    for name in TERMS.names():
        for param in TERMS.get(name).Params.model_fields:
            assert f"| `losses.{name}.{param}` |" in text, (name, param)
