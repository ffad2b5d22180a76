"""The documentation site: docstring conversion, the API pages cover every public module, the
getting-started page explains the README's commands as written, and, with the ``docs`` extra
installed, ``mkdocs build --strict`` passes and bundles what the math needs."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs" / "_ext"))
from rst_docstrings import rst_to_markdown  # noqa: E402 - the extension lives under docs/


def test_inline_math_and_roles_become_markdown():
    text = ("The weight :math:`-\\alpha'_t /\n(1 - \\alpha_t)` of :class:`~ddkit.process.Process` and "
            ":meth:`.Sampler.sample`; ``code`` stays.")
    assert rst_to_markdown(text) == ("The weight \\(-\\alpha'_t / (1 - \\alpha_t)\\) of `ddkit.process.Process` and "
                                     "`Sampler.sample`; ``code`` stays.")


def test_math_directives_become_display_blocks():
    text = "Intro\n\n.. math::  a = b\n           + c\n\nAfter.\n\n.. math::\n\n    x^2\n"
    assert rst_to_markdown(text) == "Intro\n\n\n$$\na = b\n+ c\n$$\n\n\nAfter.\n\n\n$$\nx^2\n$$\n\n"


def test_literal_and_doctest_blocks_become_fences():
    text = "Example::\n\n    import ddkit\n    ddkit.build('schedule', 'linear')\n\nThen\n\n>>> 1 + 1\n2\n"
    assert rst_to_markdown(text) == ("Example:\n\n```python\nimport ddkit\nddkit.build('schedule', 'linear')\n```\n"
                                     "\n\nThen\n\n```pycon\n>>> 1 + 1\n2\n```\n")
    assert "```text\nNAME/\n  sub\n```" in rst_to_markdown("Layout::\n\n    NAME/\n      sub\n")


def test_every_public_module_is_on_an_api_page(tmp_path):
    """Modules named on a family page, or listed on a layer's "other modules" page, which
    picks up the ones no family page names."""
    from hooks import PACKAGES, documented_modules, public_modules, remaining_modules

    api = ROOT / "docs" / "api"
    pages = {package: [p for p in api.rglob("*.md") if f"<!-- api-remaining: {package} -->" in p.read_text()]
             for package in PACKAGES}
    assert all(len(found) == 1 for found in pages.values()), pages
    direct, recursive = documented_modules(api)
    assert "ddkit.contrib.scaffold" in direct and "ddkit.plugins.samplers" in recursive
    assert "ddkit.process" not in remaining_modules(ROOT, api, "ddkit")
    # a module no page names is picked up by its layer's page
    fake_root = tmp_path / "repo"
    for folder in PACKAGES.values():
        (fake_root / folder).mkdir(parents=True)
        (fake_root / folder / "__init__.py").write_text("")
    (fake_root / "contrib" / "brand_new.py").write_text("")
    (fake_root / "contrib" / "_private.py").write_text("")
    assert remaining_modules(fake_root, api, "ddkit.contrib") == ["ddkit.contrib.brand_new"]
    assert public_modules(fake_root, "ddkit.contrib") == ["ddkit.contrib", "ddkit.contrib.brand_new"]


def test_getting_started_explains_the_readme_commands_as_written():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = re.search(r"```bash\n(.*?)```", readme, re.S)[1]
    lines = [line for line in commands.splitlines() if line and not line.startswith("#")]
    assert len(lines) == 2
    page = (ROOT / "docs" / "getting-started.md").read_text(encoding="utf-8")
    for line in lines:
        assert f"```bash\n{line}\n```" in page


def test_the_report_plots_are_drawn_from_the_stored_results():
    from hooks import report_plots

    plots = report_plots(ROOT, ROOT / "docs")
    assert {"oracle.png", "benchmark-cpu-2threads.png"} <= set(plots)
    assert all(png.startswith(b"\x89PNG\r\n") for png in plots.values())


def test_the_site_builds_strictly_and_works_offline(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install -e '.[docs]'")
    pytest.importorskip("mkdocstrings")
    site = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                            cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    pages = list(site.rglob("index.html"))
    assert len(pages) >= 40
    api = (site / "api" / "core" / "processes" / "index.html").read_text(encoding="utf-8")
    assert 'class="arithmatex"' in api and ":math:" not in api  # docstring math converted
    assert (site / "assets" / "katex" / "katex.min.js").exists()
    assert (site / "assets" / "plots" / "oracle.png").exists()
    for page in pages:  # nothing at view time comes from another host
        html = page.read_text(encoding="utf-8")
        assert not re.search(r"<(?:script|link)[^>]+(?:src|href)=\"(?:https?:)?//", html), page
