"""The repository root holds only the expected entries: a stray artefact (a profiler dump, a
scratch script, a model copy) fails CI instead of being committed unnoticed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

EXPECTED_ROOT = {
    ".ci", ".gitignore", "CHANGELOG.md", "README.md", "pyproject.toml",
    "benchmarks", "docs", "export", "sdk", "tests", "training",
}
"""Top-level entries git tracks or would add (ignored build outputs such as *.egg-info do not count)."""


def _git(*args: str) -> list[str]:
    out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True, timeout=60)
    return [line for line in out.stdout.splitlines() if line]


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="needs a git checkout")
def test_repository_root_holds_only_expected_entries():
    """Tracked files plus untracked, not-ignored ones: their first path component is in EXPECTED_ROOT.

    To add a top-level entry on purpose, add it to EXPECTED_ROOT; to keep a tool's output out,
    add it to .gitignore.
    """
    paths = _git("ls-files", "--cached", "--others", "--exclude-standard")
    deleted = set(_git("ls-files", "--deleted"))  # removed in the working tree, not yet committed
    roots = {p.split("/", 1)[0] for p in paths if p not in deleted}
    stray = sorted(roots - EXPECTED_ROOT)
    assert not stray, f"unexpected entries at the repository root: {stray}; delete them, .gitignore them, or add them to EXPECTED_ROOT"
