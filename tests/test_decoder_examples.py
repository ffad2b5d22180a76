"""The decoder example: pipelines/remdm.yaml is the quickstart with a ReMDM sampler, runs end to
end, and ``ddkit sample --show`` shows the remasking (tokens masked again) in the trajectory."""

import re

import pytest
import torch

from ddkit.contrib.pipeline_config import load_pipeline
from ddkit.contrib.sampling import render_trajectory
from ddkit.contrib.tokenizers import CharTokenizer

from pipeline_helpers import ROOT, TINY, invoke

REMDM = ROOT / "pipelines" / "remdm.yaml"
QUICKSTART = ROOT / "pipelines" / "quickstart.yaml"


def test_remdm_pipeline_is_the_quickstart_with_a_remdm_sampler():
    remdm, quickstart = load_pipeline(REMDM).model_dump(), load_pipeline(QUICKSTART).model_dump()
    assert remdm["sampler"]["rule"]["name"] == "remdm" and remdm["sampler"]["rule"]["strategy"] == "loop"
    for token_option in ("temperature", "top_p"):
        assert remdm["sampler"][token_option] == quickstart["sampler"][token_option]
    differ = {key for key in quickstart if remdm[key] != quickstart[key]}
    assert differ == {"name", "sampler"}


def line_counts(trajectory_text):
    """(masked, remasked or None) of each line of a rendered trajectory."""
    counts = []
    for line in trajectory_text.splitlines():
        match = re.match(r"step +\d+/\d+ +(\d+) masked(?: +(\d+) remasked)? │", line)
        assert match, line
        counts.append((int(match.group(1)), None if match.group(2) is None else int(match.group(2))))
    return counts


def test_trajectory_counts_the_tokens_masked_again_between_lines():
    tokenizer = CharTokenizer(alphabet="ab")
    m = tokenizer.vocab_size
    states = [[m, m, m], [0, m, m], [m, 1, m], [0, 1, m], [m, m, 0], [1, 1, 0]]  # remasks: 1 at step 2, 2 at step 4
    trajectory = [torch.tensor([row]) for row in states]
    counts = line_counts(render_trajectory(tokenizer, trajectory, m, snapshots=3))  # steps 0, 2 (or 3), 5
    assert [c[0] for c in counts] == [3, int((trajectory[round(5 / 2)] == m).sum()), 0]
    assert sum(c[1] for c in counts) == 3 and counts[0][1] == 0
    plain = render_trajectory(tokenizer, [torch.tensor([row]) for row in ([m, m], [0, m], [0, 1])], m)
    assert all(c[1] is None for c in line_counts(plain))  # no remasking, no column


@pytest.mark.parametrize("rule", [None, "rule={name: remdm, strategy: rescale, eta: 0.5}"])
def test_remdm_pipeline_runs_and_show_displays_remasking(rule, tmp_path):
    out = tmp_path / "remdm"
    result = invoke("run", REMDM, *TINY, "--out", out)
    assert result.exit_code == 0, result.output
    args = ["-p", "steps=128", *(["-p", rule] if rule else [])]
    shown = invoke("sample", "--run", out, "-n", "2", "--show", "--seed", "1", *args, "--out", tmp_path / "s.txt")
    assert shown.exit_code == 0, shown.output
    trajectory = shown.output.split("denoising trajectory of sample 0 (█ = mask):\n", 1)[1]
    counts = line_counts("\n".join(line for line in trajectory.splitlines() if line.startswith("step")))
    assert counts[-1][0] == 0 and sum(c[1] or 0 for c in counts) > 0
