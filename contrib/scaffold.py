r"""``ddkit new-plugin NAME --kind KIND [--kind KIND ...]``: write a ready third-party plugin
package.

The package is a working starting point, not an empty template: every component it holds is
registered, documented with its formula and passes ddkit's conformance kit as written.
The package::

    NAME/
      pyproject.toml         distribution NAME (dashes for underscores), entry point ddkit: NAME
      README.md              install, test, use from a pipeline file
      src/NAME/__init__.py
      src/NAME/schedule.py   --kind schedule:  alpha_t = cos(pi t / 2)^p, its derivative and inverse
      src/NAME/process.py    --kind process:   keep w.p. alpha_t / alpha_s, else redraw uniformly
      src/NAME/sampler.py    --kind sampler:   the posterior step on a time grid (GridSampler + step)
      src/NAME/corrector.py  --kind corrector: a Gibbs update of one position at a time, q_t-invariant
      tests/test_NAME.py     ddkit.testing.parametrize_with_checks over every component

Each component is registered under ``NAME`` in its kind (``process.schedule=NAME``,
``sampler={name: NAME}``, ...). The entry point names the package, so ddkit registers every
public module below it: a module added later needs no new entry point.

A ``NAME`` must be a lowercase Python identifier that is not yet importable (it becomes the
import package) and not a component name ddkit or an installed plugin already has for one of
the chosen kinds; the target directory must not exist.
"""

from __future__ import annotations

import importlib.util
import keyword
import re
from collections.abc import Iterable
from pathlib import Path

import click

import ddkit

KINDS = ("schedule", "process", "sampler", "corrector")
_NAME = re.compile(r"[a-z][a-z0-9_]*")


class ScaffoldError(ddkit.DDKitError, ValueError):
    """A plugin package cannot be written with the given name, kinds or directory."""


def class_prefix(name: str) -> str:
    """``my_plugin`` -> ``MyPlugin``."""
    return "".join(part.capitalize() for part in name.split("_") if part)


def check_name(name: str, kinds: Iterable[str]) -> None:
    """Raise :class:`ScaffoldError` unless ``name`` can be the package and component name."""
    if not _NAME.fullmatch(name) or keyword.iskeyword(name):
        raise ScaffoldError(f"invalid package name {name!r}: expected a lowercase Python identifier "
                            "(letters, digits and underscores, starting with a letter), e.g. 'my_schedule'")
    if importlib.util.find_spec(name) is not None:
        raise ScaffoldError(f"invalid package name {name!r}: a module of that name is already importable "
                            "here; the plugin's package would shadow it or be shadowed by it")
    registry = ddkit.get_registry()
    for kind in kinds:
        taken = [r for r in registry.records(kind) if r.name == name]
        if taken:
            owner = "a built-in" if taken[0].source == "ddkit" else f"installed from {taken[0].source!r}"
            raise ScaffoldError(f"{kind} name {name!r} is taken ({owner}); choose another NAME")


def plugin_files(name: str, kinds: Iterable[str]) -> dict[str, str]:
    """The files of the package, by path relative to its directory."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        raise ScaffoldError(f"kinds must be among {', '.join(KINDS)}, got {unknown or 'none'}")
    kinds = [k for k in KINDS if k in set(kinds)]
    prefix, distribution = class_prefix(name), name.replace("_", "-")

    def fill(template: str) -> str:
        return template.replace("__NAME__", name).replace("__PREFIX__", prefix) \
            .replace("__DISTRIBUTION__", distribution).replace("__KINDS__", ", ".join(kinds))

    files = {
        "pyproject.toml": fill(PYPROJECT),
        "README.md": fill(README) + "".join(fill(README_USE[k]) for k in kinds),
        f"src/{name}/__init__.py": fill(INIT),
        f"tests/test_{name}.py": fill(TESTS_HEAD) + "".join(fill(TESTS_COMPONENTS[k]) for k in kinds)
        + fill(TESTS_RUN) + "".join(fill(TESTS_EXTRA.get(k, "")) for k in kinds),
    }
    for kind in kinds:
        files[f"src/{name}/{kind}.py"] = fill(MODULES[kind])
    return files


def write_plugin(name: str, kinds: Iterable[str], parent: str | Path = ".") -> Path:
    """Write the package ``parent/name`` (see the module docstring) and return its path."""
    kinds = list(dict.fromkeys(kinds))
    files = plugin_files(name, kinds)
    check_name(name, kinds)
    target = Path(parent) / name
    if target.exists():
        raise ScaffoldError(f"target directory {str(target)!r} already exists; remove it or choose "
                            "another NAME or --dir")
    for relative, text in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return target


@click.command("new-plugin")
@click.argument("name")
@click.option("--kind", "kinds", multiple=True, required=True, type=click.Choice(KINDS),
              help="A component to include (repeat for several).")
@click.option("--dir", "parent", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Where to create the package directory NAME.")
def new_plugin(name: str, kinds: tuple[str, ...], parent: str) -> None:
    """Write a plugin package NAME with a working, tested skeleton per --kind."""
    try:
        target = write_plugin(name, kinds, parent)
    except ScaffoldError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {target}/ ({', '.join(dict.fromkeys(kinds))})\n"
               f"  pip install -e {target}\n"
               f"  python -m pytest {target / 'tests'}")


@ddkit.hookimpl
def register_commands(cli):
    cli.add_command(new_plugin)


# --- the templates: __NAME__ (package and component name), __PREFIX__ (class-name prefix),
# __DISTRIBUTION__ (distribution name), __KINDS__ (the kinds, comma-separated) -------------

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "__DISTRIBUTION__"
version = "0.1.0"
description = "A ddkit plugin: __KINDS__."
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["ddkit"]

[project.optional-dependencies]
test = ["pytest>=7.4"]

# ddkit finds plugins through this entry-point group. The value is the package: ddkit
# registers it and every public module below it.
[project.entry-points.ddkit]
__NAME__ = "__NAME__"

[tool.setuptools.packages.find]
where = ["src"]
'''

README = '''\
# __DISTRIBUTION__

A [ddkit](https://pypi.org/project/ddkit/) plugin: __KINDS__, each registered as `__NAME__`.

```bash
pip install -e ".[test]"
ddkit plugins | grep __NAME__          # listed with __DISTRIBUTION__ as its source
python -m pytest tests                 # ddkit's conformance kit on every component
```

`tests/test___NAME__.py` runs every check of `ddkit.testing` that applies to each
component. Change a formula and the checks tell you whether the pieces still agree; publish
with `python -m build` and `twine upload dist/*` once they pass.

## Use
'''

README_USE = {
    "schedule": '''
**Schedule** (`src/__NAME__/schedule.py`): in a pipeline file,
`process: {name: masked, schedule: {name: __NAME__, power: 2.0}}`, or as an override:
`ddkit run pipelines/markov.yaml process.schedule=__NAME__`.
''',
    "process": '''
**Process** (`src/__NAME__/process.py`): `process: {name: __NAME__, schedule: loglinear}`;
the pipeline passes `vocab_size`.
''',
    "sampler": '''
**Sampler** (`src/__NAME__/sampler.py`): `sampler: {name: __NAME__, steps: 64, temperature: 1.0}`,
or `ddkit sample --run RUN --sampler __NAME__ -p steps=64`.
''',
    "corrector": '''
**Corrector** (`src/__NAME__/corrector.py`): after the predictor steps of a sampler,
`sampler: {name: ancestral, steps: 64, corrector: {name: __NAME__, every: 4}}`.
''',
}

INIT = '''\
"""__DISTRIBUTION__: a ddkit plugin (__KINDS__).

ddkit registers this package and each public module below it through the ``ddkit`` entry
point in pyproject.toml; every module registers its own component in a hook.
"""
'''

MODULES = {
    "schedule": r'''r"""The ``__NAME__`` schedule: a power of the cosine.

.. math::

    \alpha_t = \cos^p\!\Big(\frac{\pi t}{2}\Big), \qquad
    \alpha'_t = -\frac{p\pi}{2}\cos^{p-1}\!\Big(\frac{\pi t}{2}\Big)\sin\Big(\frac{\pi t}{2}\Big),
    \qquad t(\alpha) = \frac{2}{\pi}\arccos\big(\alpha^{1/p}\big)

Endpoints :math:`\alpha_0 = 1` and :math:`\alpha_1 = 0` exactly (no shift: the continuous-time
losses clip :math:`t` away from 0, where the ELBO weight :math:`-\alpha'_t/(1-\alpha_t)` is
infinite); :math:`p \ge 1` keeps :math:`\alpha'_1` finite. Replace the three formulas with
yours: the conformance kit (tests/test___NAME__.py) checks that they agree.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
from pydantic import Field

import ddkit


class __PREFIX__Schedule(ddkit.Schedule):
    r""":math:`\alpha_t = \cos^p(\pi t / 2)`, see the module docstring."""

    invertible = True  # alpha is strictly decreasing: inverse() exists (first-hitting needs it)

    def __init__(self, power: Annotated[float, Field(ge=1.0, description="the exponent p")] = 2.0):
        super().__init__()
        self.power = float(power)

    def alpha(self, t):
        return torch.cos(0.5 * math.pi * t) ** self.power

    def alpha_prime(self, t):
        half = 0.5 * math.pi * t
        return -0.5 * math.pi * self.power * torch.cos(half) ** (self.power - 1.0) * torch.sin(half)

    def inverse(self, alpha):
        return torch.arccos(alpha.clamp(0.0, 1.0) ** (1.0 / self.power)) * (2.0 / math.pi)


@ddkit.hookimpl
def register_schedules(register):
    register("__NAME__", __PREFIX__Schedule, summary="alpha_t = cos(pi t / 2)^p")
''',
    "process": r'''r"""The ``__NAME__`` process: between times :math:`s \le t` a token is kept with
probability :math:`a = \alpha_t/\alpha_s`, else redrawn uniformly from the ``V`` tokens.

.. math::

    \bar Q(s, t) = a\,I + (1 - a)\,\frac{\mathbf{1}\mathbf{1}^\top}{V}, \qquad
    R(t) = \beta_t\Big(\frac{\mathbf{1}\mathbf{1}^\top}{V} - I\Big), \quad
    \beta_t = -\frac{\alpha'_t}{\alpha_t}, \qquad \text{prior} = \mathrm{Uniform}(V)

Three methods define a process; ``ddkit.Process`` derives the rest (marginals, posterior,
ELBO terms, score form) from them on dense ``V x V`` matrices, fine for small vocabularies:
override those with closed forms for speed. The conformance kit checks that the three agree
(Chapman–Kolmogorov, the Kolmogorov equations, the prior reached at ``t = 1``).
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field

import ddkit


class __PREFIX__Process(ddkit.Process):
    r"""Uniform resampling at rate :math:`\beta_t`; see the module docstring."""

    def __init__(self, vocab_size: Annotated[int, Field(ge=2, description="V, passed by a pipeline")],
                 schedule: ddkit.Component("schedule") = "loglinear"):
        super().__init__(vocab_size, ddkit.build("schedule", schedule))

    def transition_matrix(self, s, t):
        a = (self.schedule.alpha(t) / self.schedule.alpha(s))[..., None, None]
        eye = torch.eye(self.vocab_size, dtype=torch.float64)
        return a * eye + (1 - a) / self.vocab_size

    def rate_matrix(self, t):
        beta = (-self.schedule.alpha_prime(t) / self.schedule.alpha(t))[..., None, None]
        V = self.vocab_size
        return beta * (torch.full((V, V), 1 / V, dtype=torch.float64) - torch.eye(V, dtype=torch.float64))

    def prior_probs(self):
        return torch.full((self.vocab_size,), 1 / self.vocab_size, dtype=torch.float64)


@ddkit.hookimpl
def register_processes(register):
    register("__NAME__", __PREFIX__Process, summary="keep w.p. alpha_t/alpha_s, else redraw uniformly")
''',
    "sampler": r'''r"""The ``__NAME__`` sampler: the posterior (ancestral) step on a time grid.

Step :math:`t \to s` of the grid draws every free position from

.. math::

    p_\theta(x_s \mid x_t) = \sum_{x_0} \mu_\theta(x_t, t)_{x_0}\, q(x_s \mid x_t, x_0)

with the mean :math:`\mu_\theta` filtered by temperature, top-k and top-p; the last step goes
to data. It works with every process (``Process.posterior_probs``). The loop, the grid
(``steps``, ``grid``), caching, the corrector, fixed positions and the NFE count come from
``ddkit.GridSampler``: a sampler only writes ``step``. Change ``step`` to make it yours.
"""

from __future__ import annotations

import ddkit
from ddkit import steps


class __PREFIX__Sampler(ddkit.GridSampler):
    """The posterior step on a grid; parameters: those of ``ddkit.GridSampler``."""

    def step(self, state):
        t, s = self.times(state)
        last = self.last_step(state)
        log_mean = state.calls.log_mean(state.x, t)  # one denoiser call, counted in NFE
        state.x = steps.posterior_step(state, log_mean, s, t, tokens=self.tokens, last=last,
                                       argmax=last and self.final_argmax)
        state.t = s


@ddkit.hookimpl
def register_samplers(register):
    register("__NAME__", __PREFIX__Sampler, summary="posterior step on a time grid")
''',
    "corrector": r'''r"""The ``__NAME__`` corrector: Gibbs updates of one position at a time, for absorbing
(masked) processes.

At time :math:`t` position :math:`n` is redrawn from its conditional under :math:`q_t` given
the others. Masking is independent of the data, so

.. math::

    q_t(x^n = \mathrm{mask} \mid x^{\neg n}) = 1 - \alpha_t, \qquad
    q_t(x^n = j \mid x^{\neg n}) = \alpha_t\, p(x_0^n = j \mid x^{\neg n})
    = \alpha_t\, \mu(x_t^{n \to \mathrm{mask}})^n_j ,

where :math:`x_t^{n \to \mathrm{mask}}` is :math:`x_t` with position :math:`n` masked. With the
exact denoiser each update leaves :math:`q_t` invariant (tests/test___NAME__.py checks it
against ddkit's exact oracle); with a trained one it moves tokens the predictor committed
early. ``positions`` updates run one after the other, each one denoiser call.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field

import ddkit
from ddkit.categorical import sample_categorical


class __PREFIX__Corrector(ddkit.Corrector):
    """One-position Gibbs updates at the current time; see the module docstring."""

    requires = frozenset({"absorbing"})

    def __init__(self, positions: Annotated[int, Field(ge=1, description="updates per call")] = 1,
                 **common):
        super().__init__(**common)  # every
        self.positions = positions

    def correct(self, state):
        process, generator = state.process, state.generator
        rows = torch.arange(state.x.shape[0], device=state.x.device)
        alpha = process.schedule.alpha(state.t.to(torch.float64))  # [B]
        for _ in range(self.positions):
            free = ~state.fixed
            scores = torch.rand(state.x.shape, generator=generator, dtype=torch.float64, device=state.x.device)
            n = scores.masked_fill(~free, -1.0).argmax(-1)  # one free position per row, uniformly
            masked = state.x.clone()
            masked[rows, n] = process.mask_id
            probs = state.calls.log_mean(masked, state.t)[rows, n].exp().to(torch.float64)  # [B, V]
            token = sample_categorical(probs, generator=generator)
            to_mask = torch.rand(alpha.shape, generator=generator, dtype=torch.float64, device=alpha.device) >= alpha
            new = torch.where(to_mask, torch.full_like(token, process.mask_id), token)
            update = free[rows, n]
            state.x[rows[update], n[update]] = new[update]


@ddkit.hookimpl
def register_correctors(register):
    register("__NAME__", __PREFIX__Corrector, summary="Gibbs update of one position at a time (q_t-invariant)")
''',
}

TESTS_HEAD = '''\
"""ddkit's conformance kit on every component of __DISTRIBUTION__: one pytest test per check
that applies (``ddkit.testing.parametrize_with_checks``). The components are built by name,
so these tests also show that the entry point registers them."""

import torch

import ddkit
from ddkit.testing import parametrize_with_checks

MASKED = ddkit.build("process", "masked", vocab_size=4, schedule="cosine")
COMPONENTS = []
'''

TESTS_COMPONENTS = {
    "schedule": '''COMPONENTS += [ddkit.build("schedule", "__NAME__"), ddkit.build("schedule", "__NAME__", power=1.0),
               ddkit.build("process", "masked", vocab_size=4, schedule="__NAME__")]
''',
    "process": '''COMPONENTS += [ddkit.build("process", "__NAME__", vocab_size=3)]
''',
    "sampler": '''COMPONENTS += [(ddkit.build("sampler", "__NAME__", steps=8), MASKED),
               (ddkit.build("sampler", "__NAME__", steps=8), ddkit.build("process", "uniform", vocab_size=4))]
''',
    "corrector": '''COMPONENTS += [(ddkit.build("sampler", "ancestral", steps=8, corrector={"name": "__NAME__"}), MASKED)]
''',
}

TESTS_RUN = '''

@parametrize_with_checks(COMPONENTS)
def test_conformance(component, check):
    check()
'''

TESTS_EXTRA = {
    "corrector": '''

def test_corrector_keeps_the_marginal_with_the_exact_denoiser():
    """x_t ~ q_t drawn exactly from a Markov chain; after the corrector the law of x_t is
    still q_t (enumerated over all (V + 1)^N states; total variation within the bound that
    exact sampling meets with probability 1 - 1e-6)."""
    from ddkit.sampler import DenoiserCalls, SamplerState
    from ddkit.testing import MarkovChain, OracleDenoiser
    from ddkit.testing.oracles import sequence_ids
    from ddkit.testing.stats import empirical_distribution, total_variation, tv_bound

    V, N, draws, t = 2, 3, 40_000, 0.3
    chain = MarkovChain(V, seed=0, concentration=0.5)
    process = ddkit.build("process", "masked", vocab_size=V, schedule="linear")
    generator = torch.Generator().manual_seed(0)
    x0 = chain.sample(draws, N, generator=generator)
    times = torch.full((draws,), t, dtype=torch.float64)
    x = process.sample_marginal(x0, times, generator=generator)
    state = SamplerState(x=x, fixed=torch.zeros_like(x, dtype=torch.bool), t=times, process=process,
                         calls=DenoiserCalls(OracleDenoiser(chain, process), process,
                                             ddkit.build("parameterization", "mean")),
                         generator=generator)
    ddkit.build("corrector", "__NAME__", positions=2).correct(state)

    channel = process.marginal_matrix(torch.tensor(t, dtype=torch.float64))[:V]  # q(x_t^n | x_0^n), [V, V + 1]
    joint = channel
    for _ in range(N - 1):
        joint = torch.kron(joint, channel)  # first position most significant, as sequence_ids
    truth = chain.probabilities(N) @ joint
    law = empirical_distribution(sequence_ids(state.x, V + 1), (V + 1) ** N)
    assert total_variation(law, truth) <= tv_bound(truth, draws)
''',
}
