"""``make site``: the README, docs/ and every profile's executed notebooks as one static site, built with
strict link checking, and read back in headless Chromium: the home page's answer table and a notebook's
figure render. Skipped only where no Chromium is installed (``.ci/run`` installs the Debian package)."""
from __future__ import annotations

import html
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "build" / "site"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_strict_build_refuses_a_broken_link(tmp_path):
    """The site's own mkdocs settings (strict, link validation) on a two-page site with one dead link."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    config.update(docs_dir=str(tmp_path / "src"), site_dir=str(tmp_path / "out"),
                  plugins=["search"], nav=[{"Home": "index.md"}])
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "index.md").write_text("# Home\n\n[the results](docs/results.md)\n")
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(tmp_path / "mkdocs.yml")],
                         capture_output=True, text=True)
    assert run.returncode != 0 and "docs/results.md" in run.stderr, run.stderr[-2000:]


@pytest.fixture(scope="module")
def site():
    if CHROMIUM is None:
        pytest.skip("no headless Chromium installed (apt-get install chromium)")
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "build_site.py")], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    return SITE


def _chromium(*args: str) -> str:
    run = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def test_home_page_shows_the_answer_table_and_its_figure(site):
    dom = _chromium("--dump-dom", (site / "index.html").as_uri())
    tables = [html.unescape(re.sub(r"<[^>]+>", "|", t)) for t in re.findall(r"<table.*?</table>", dom, re.S)]
    answer = [t for t in tables if "SLKD − KD (paired)" in t]
    assert answer, "the home page has no answer table"
    assert re.search(r"\|300 epochs \(seeds 0–4\)\|.*\|\+1\.63 ± 1\.47\|", answer[0].replace("\n", "")), answer[0][:600]
    images = re.findall(r'<img[^>]+src="([^"]+)"', dom)
    figure = [src for src in images if src.endswith("03_slkd_minus_kd.png")]
    assert figure and (site / figure[0]).exists(), images


def test_a_notebook_page_renders_its_figure_and_its_reading(site, tmp_path):
    from PIL import Image

    page = site / "results" / "cpu300" / "notebooks" / "03_curriculum_kd.html"
    dom = _chromium("--dump-dom", page.as_uri())
    assert "What the <code>cpu300</code> profile runs for this notebook" in dom
    assert "At the authors' schedule SLKD is ahead of KD" in html.unescape(dom)

    def orange(url: str) -> int:
        """Pixels of SLKD's colour (matplotlib's tab:orange, 255/127/14): only the figures draw it."""
        shot = tmp_path / "page.png"
        _chromium("--window-size=1280,9000", f"--screenshot={shot}", url)
        return sum(1 for r, g, b in Image.open(shot).convert("RGB").getdata() if r > 230 and 105 < g < 150 and b < 60)

    assert orange((site / "docs" / "cli.html").as_uri()) == 0  # a page without figures: none
    assert orange(page.as_uri()) > 40, f"no figure rendered on {page.name}"
