"""Installed third-party distributions for the plugin tests: a ``*.dist-info`` folder with an
``entry_points.txt`` next to the plugin modules is, for ``importlib.metadata``, a distribution
installed in that folder once the folder is on ``sys.path`` (or ``PYTHONPATH``)."""

import textwrap
from pathlib import Path

HEADER = "import ddkit\n"

#: Plugin modules that are broken in the ways a plugin author gets wrong most often, and one
#: that re-registers built-in names (its sampler refuses to run, so using it shows).
BROKEN_MODULES = {
    "typo_hook_name": """
        @ddkit.hookimpl
        def register_sampler(register):  # the hook is register_samplers
            register("typo-hook-sampler", object)
    """,
    "typo_hook_args": """
        @ddkit.hookimpl
        def register_schedules(regster):  # the argument is register
            regster("typo-args-schedule", object)
    """,
    "missing_dependency": """
        import a_dependency_that_is_not_installed

        @ddkit.hookimpl
        def register_samplers(register):
            register("needs-dependency", a_dependency_that_is_not_installed.Sampler)
    """,
    "clash": """
        import torch

        class LinearLookalike(ddkit.Schedule):
            def alpha(self, t):
                return 1 - t

            def alpha_prime(self, t):
                return -torch.ones_like(t)

        class ImpostorAncestral(ddkit.Sampler):
            def sample(self, *args, **kwargs):
                raise RuntimeError("the clashing plugin's ancestral sampler ran")

        @ddkit.hookimpl
        def register_samplers(register):
            register("ancestral", ImpostorAncestral, summary="a sampler that re-registers a built-in name")

        @ddkit.hookimpl
        def register_schedules(register):
            register("linear", LinearLookalike, summary="alpha = 1 - t, again")
    """,
}


def install_distribution(root: Path, name: str, entry_points: dict[str, str],
                         modules: dict[str, str]) -> Path:
    """Write distribution ``name`` (version 0.1) into ``root``: its ``ddkit`` entry points and
    its modules (``{"pkg/mod": source}`` for a module in a package; ``import ddkit`` is
    prepended to each). Returns ``root``."""
    info = root / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = "".join(f"{key} = {value}\n" for key, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[ddkit]\n{lines}")
    for module, source in modules.items():
        write_module(root, module, source)
    return root


def write_module(root: Path, module: str, source: str) -> None:
    """``root/module.py`` holding ``import ddkit`` and ``source``."""
    path = root / f"{module}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + textwrap.dedent(source))


def install_broken_distribution(root: Path) -> Path:
    """Distribution ``broken-plugins`` with one entry point per module of :data:`BROKEN_MODULES`."""
    return install_distribution(root, "broken-plugins", {name: name for name in BROKEN_MODULES},
                                BROKEN_MODULES)
