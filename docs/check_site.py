"""Build the documentation site, serve it locally and check it in headless Chromium.

For each page checked (the landing page, an API page generated from the docstrings, and a
math page) it loads the page from a local HTTP server and requires that

* the page renders: HTTP 200, the article has its title and text;
* every equation is typeset: each ``.arithmatex`` element holds KaTeX output and none holds
  a KaTeX parse error (``.katex-error``);
* the browser console reports no error, no page script throws, and no request fails or
  leaves the local server (the site must work offline);

and saves a full-page PNG screenshot. One line per page is printed; the exit status is 1 if
any check fails.

Needs the ``docs-check`` extra (MkDocs and playwright's Python package; its browser download
is not used) and a Chromium: Debian's ``chromium`` package, or ``--chromium PATH``::

    pip install -e ".[docs-check]"
    python docs/check_site.py --out build/site-check
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = {
    "landing": "",
    "api": "api/core/processes/",
    "math": "math/",
}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: what a page reports about its equations, read in the browser
MATH_PROBE = """() => {
  const blocks = [...document.querySelectorAll('.arithmatex')];
  return {
    equations: blocks.length,
    typeset: blocks.filter(b => b.querySelector('.katex')).length,
    errors: [...document.querySelectorAll('.katex-error')].map(e => e.getAttribute('title') || e.textContent),
    title: (document.querySelector('article h1')?.firstChild?.textContent) || '',
    text: (document.querySelector('article') || {}).innerText?.length || 0,
  };
}"""


def build_site(site_dir: Path) -> float:
    """``mkdocs build --strict`` into ``site_dir``; returns the seconds it took."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
                            cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    if result.returncode != 0:
        sys.exit(f"mkdocs build --strict failed:\n{result.stdout}{result.stderr}")
    return time.perf_counter() - start


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the signature of the base class
        pass


def serve(site_dir: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve ``site_dir`` on a free loopback port in a background thread."""
    handler = functools.partial(QuietHandler, directory=str(site_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def check_page(browser, base: str, name: str, path: str, out: Path) -> list[str]:
    """Load one page, run the checks, save its screenshot; returns the problems found."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    console, problems = [], []
    page.on("console", lambda msg: console.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda exc: console.append(f"page error: {exc}"))
    page.on("requestfailed", lambda req: console.append(f"request failed: {req.url} ({req.failure})"))
    page.on("request", lambda req: None if req.url.startswith((base, "data:", "blob:"))
            else console.append(f"request leaves the local site: {req.url}"))
    response = page.goto(base + path, wait_until="networkidle")
    if response is None or response.status != 200:
        problems.append(f"HTTP {response.status if response else 'no response'}")
    page.wait_for_function("() => document.querySelectorAll('.arithmatex').length === "
                           "document.querySelectorAll('.arithmatex .katex, .arithmatex .katex-error').length",
                           timeout=10_000)
    page.evaluate("document.fonts.ready")
    probe = page.evaluate(MATH_PROBE)
    if not probe["title"].strip() or probe["text"] < 200:
        problems.append(f"article empty (title {probe['title']!r}, {probe['text']} characters)")
    if probe["typeset"] != probe["equations"]:
        problems.append(f"{probe['equations'] - probe['typeset']} of {probe['equations']} equations not typeset")
    problems += [f"KaTeX error: {e}" for e in probe["errors"]]
    problems += console
    screenshot = out / f"{name}.png"
    page.screenshot(path=str(screenshot), full_page=name != "api")
    page.close()
    status = "ok" if not problems else "FAILED"
    print(f"{name:8s} {path or '/':24s} {status}: '{probe['title'].strip()}', {probe['equations']} equations, "
          f"{probe['typeset']} typeset, {len(console)} console errors -> {screenshot}")
    for problem in problems:
        print(f"           - {problem}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "site-check", help="screenshots go here")
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"),
                        help="the Chromium executable (default: chromium on PATH)")
    args = parser.parse_args(argv)
    if not args.chromium:
        sys.exit("no Chromium found: install Debian's chromium package or pass --chromium PATH")
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        seconds = build_site(site)
        pages = len(list(site.rglob("index.html")))
        print(f"built {pages} pages in {seconds:.1f} s (mkdocs build --strict)")
        server, base = serve(site)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_FLAGS[1:],
                                                     headless=True)
                print(f"{browser.browser_type.name} {browser.version}, serving {base}")
                problems = [p for name, path in PAGES.items() for p in check_page(browser, base, name, path, args.out)]
                browser.close()
        finally:
            server.shutdown()
    print("browser check passed" if not problems else f"browser check FAILED: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
