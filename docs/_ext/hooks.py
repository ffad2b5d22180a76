"""MkDocs hooks of the ddkit site (``hooks:`` in ``mkdocs.yml``).

* **Sources for the API reference.** ddkit's import packages live in three source folders
  (``core/`` is ``ddkit``, ``plugins/`` is ``ddkit.plugins``, ``contrib/`` is
  ``ddkit.contrib``: setuptools' package-dir mapping). griffe, which reads the sources for
  mkdocstrings, finds a package by its folder name, so before the build
  :func:`source_tree` lays out ``build/docs-src/ddkit/`` as links to those folders; the
  handler's ``paths`` point there. Nothing is copied: the site documents the working tree.
* **Repository files linked from a page.** The pages are also read on a code host, where a
  link such as ``../benchmarks/results/cpu-1thread.json`` reaches the file next to
  ``docs/``. Such files are added to the site under ``repository/`` and the links are
  rewritten to them, so the site keeps them and works offline.
* **Modules no page names.** ``<!-- api-remaining: PACKAGE -->`` on an API page expands to a
  ``::: module`` line for every public module of that layer (``ddkit``, ``ddkit.plugins`` or
  ``ddkit.contrib``) that no other page under ``docs/api/`` documents, so a new module is in
  the reference before anyone files it under a family.
* **Plots of the reports.** ``assets/plots/*.png`` are drawn at build time from the oracle
  report (``docs/oracle.md``, written by ``benchmarks/oracle.py``) and the benchmark results
  (``benchmarks/results/*.json``, written by ``benchmarks/run.py``), so a rerun of either
  updates the plots on the next build.
"""

from __future__ import annotations

import io
import json
import posixpath
import re
import shutil
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

LAYERS = {"plugins": "plugins", "contrib": "contrib"}
#: the import package of each source folder
PACKAGES = {"ddkit": "core", "ddkit.plugins": "plugins", "ddkit.contrib": "contrib"}
_DIRECTIVE = re.compile(r"^::: ([\w.]+)\n((?:    .*\n)*)", re.M)
_REMAINING = re.compile(r"^<!-- api-remaining: ([\w.]+) -->$", re.M)
REPOSITORY_DIR = "repository"
_RELATIVE_LINK = re.compile(r"\]\((\.\./[^)\s#]+)\)")


def source_tree(root: Path) -> Path:
    """Lay out ``root/build/docs-src/ddkit`` as links into ``root``'s source folders and
    return ``root/build/docs-src``."""
    tree = root / "build" / "docs-src"
    package = tree / "ddkit"
    if tree.exists():
        shutil.rmtree(tree)
    package.mkdir(parents=True)
    for entry in (root / "core").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    for name, folder in LAYERS.items():
        (package / name).symlink_to((root / folder).resolve(), target_is_directory=True)
    return tree


def public_modules(root: Path, package: str) -> list[str]:
    """The public modules of one layer (``package`` in :data:`PACKAGES`), sorted."""
    folder, modules = root / PACKAGES[package], []
    for path in folder.rglob("*.py"):
        parts = [p for p in path.relative_to(folder).with_suffix("").parts if p != "__init__"]
        if (path.parent / "__init__.py").exists() and not any(p.startswith("_") for p in parts) \
                and "example_plugin" not in parts:
            modules.append(".".join([package, *parts]))
    return sorted(modules)


def documented_modules(api_dir: Path) -> tuple[set[str], set[str]]:
    """The modules named on the pages under ``api_dir``: ``(direct, with their submodules)``."""
    direct, recursive = set(), set()
    for page in api_dir.rglob("*.md"):
        for match in _DIRECTIVE.finditer(page.read_text(encoding="utf-8")):
            (recursive if "show_submodules: true" in match[2] else direct).add(match[1])
    return direct, recursive


def remaining_modules(root: Path, api_dir: Path, package: str) -> list[str]:
    """The public modules of ``package``'s layer that no page under ``api_dir`` documents."""
    direct, recursive = documented_modules(api_dir)
    return [m for m in public_modules(root, package) if m not in direct | recursive
            and not any(m.startswith(p + ".") for p in recursive) and m not in PACKAGES]


def _root(config) -> Path:
    return Path(config.config_file_path).resolve().parent


def _repository_target(page_uri: str, link: str, root: Path, docs_dir: Path) -> str | None:
    """The repository path (relative to ``root``) of a link that leaves ``docs/`` and names
    an existing file, else ``None``."""
    resolved = (docs_dir / posixpath.dirname(page_uri) / link).resolve()
    if resolved.is_file() and root in resolved.parents and docs_dir not in resolved.parents:
        return resolved.relative_to(root).as_posix()
    return None


@event_priority(100)  # before mkdocstrings reads its handler's paths
def on_config(config):
    source_tree(_root(config))
    return config


def on_files(files, config):
    root, docs_dir = _root(config), Path(config.docs_dir).resolve()
    for page in [f for f in files if f.src_uri.endswith(".md")]:
        for link in _RELATIVE_LINK.findall(Path(page.abs_src_path).read_text(encoding="utf-8")):
            target = _repository_target(page.src_uri, link, root, docs_dir)
            if target and files.get_file_from_path(f"{REPOSITORY_DIR}/{target}") is None:
                files.append(File.generated(config, f"{REPOSITORY_DIR}/{target}",
                                            abs_src_path=str(root / target)))
    for name, png in report_plots(root, Path(config.docs_dir)).items():
        files.append(File.generated(config, f"assets/plots/{name}", content=png))
    return files


def on_page_markdown(markdown, page, config, files):
    root, docs_dir = _root(config), Path(config.docs_dir).resolve()
    markdown = _REMAINING.sub(
        lambda m: "\n".join(f"::: {module}\n" for module in remaining_modules(root, docs_dir / "api", m[1]))
        or "(none: every module of this layer is on a page above)", markdown)

    def relink(match):
        target = _repository_target(page.file.src_uri, match[1], root, docs_dir)
        if target is None:
            return match[0]
        here = posixpath.dirname(page.file.src_uri)
        return f"]({posixpath.relpath(f'{REPOSITORY_DIR}/{target}', here or '.')})"

    return _RELATIVE_LINK.sub(relink, markdown)


# --- plots of the reports -------------------------------------------------------------

def _markdown_tables(text: str) -> list[list[dict[str, str]]]:
    """Every pipe table of a Markdown text, as rows keyed by the header cells."""
    tables, lines = [], text.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.startswith("|") and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[i + 1].strip()):
            header = [c.strip() for c in line.strip().strip("|").split("|")]
            rows, j = [], i + 2
            while j < len(lines) and lines[j].startswith("|"):
                rows.append(dict(zip(header, (c.strip() for c in lines[j].strip().strip("|").split("|")))))
                j += 1
            tables.append(rows)
    return tables


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def oracle_plot(report: str) -> bytes:
    """Total variation to the data law against steps for each sampler of the oracle
    report's first (masked) table, with the exact sampler's floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = next(t for t in _markdown_tables(report) if t and "TV" in t[0])
    figure, axis = plt.subplots(figsize=(6.4, 3.8))
    curves: dict[str, list[tuple[int, float]]] = {}
    for row, style in zip((r for r in rows if r["steps"] == "-"), ("--", ":", "-.")):
        # samplers without steps (the exact chain, first hitting): horizontal lines
        axis.axhline(float(row["TV"]), linestyle=style, linewidth=1, color="grey",
                     label=f"{row['sampler']} (no steps)")
    for row in rows:
        if row["steps"] != "-":
            curves.setdefault(row["sampler"], []).append((int(row["steps"]), float(row["TV"])))
    for sampler, points in curves.items():
        steps, tv = zip(*sorted(points))
        axis.plot(steps, tv, marker="o", markersize=3, label=sampler)
    axis.set(xscale="log", yscale="log", xlabel="steps", ylabel="total variation to the data law",
             title="Samplers with the exact denoiser (masked process)")
    axis.legend(fontsize=8)
    data = _png(figure)
    plt.close(figure)
    return data


def benchmark_plot(results: dict, name: str) -> bytes:
    """Speed-up of each kernel (baseline time / candidate time) per shape, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["rows"] if r["section"] == "kernels" and r.get("ratio")]
    shapes = sorted({tuple(r["shape"]) for r in rows}, key=lambda s: s[0] * s[1] * s[2])
    names = list(dict.fromkeys(r["name"] for r in rows))
    figure, axis = plt.subplots(figsize=(7.2, 3.8))
    width = 0.8 / max(len(shapes), 1)
    for k, shape in enumerate(shapes):
        ratio = {r["name"]: r["ratio"] for r in rows if tuple(r["shape"]) == shape}
        axis.bar([i + k * width for i in range(len(names))], [ratio.get(n, 0.0) for n in names],
                 width, label="B, N, V = " + ", ".join(map(str, shape)))
    axis.axhline(1.0, color="black", linewidth=0.8)
    axis.set_xticks([i + width * (len(shapes) - 1) / 2 for i in range(len(names))], names,
                    rotation=30, ha="right", fontsize=8)
    first = rows[0] if rows else {"baseline": "?", "candidate": "?"}
    axis.set(yscale="log", ylabel=f"{first['baseline']} time / {first['candidate']} time",
             title=f"Kernels, {name}: {results['machine'].get('cpu', '')} "
                   f"({results['machine'].get('torch_threads', '?')} threads)")
    axis.legend(fontsize=8)
    data = _png(figure)
    plt.close(figure)
    return data


def report_plots(root: Path, docs_dir: Path) -> dict[str, bytes]:
    """The PNG plots of the reports, by file name."""
    plots = {"oracle.png": oracle_plot((docs_dir / "oracle.md").read_text(encoding="utf-8"))}
    for path in sorted((root / "benchmarks" / "results").glob("*.json")):
        results = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(results, dict) and "rows" in results:  # a benchmarks/run.py result; others have own pages
            plots[f"benchmark-{path.stem}.png"] = benchmark_plot(results, path.stem)
    return plots
