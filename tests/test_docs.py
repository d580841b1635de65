"""The user documentation holds together: every relative link and image in the Markdown guides
resolves to a file in the repository (and a ``#anchor`` to a heading of its target, by GitHub's
slug rules), the front pages stay within their size budgets, and the README keeps the commands
``.ci/run`` and users copy verbatim."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[1]

README = REPO / "README.md"
MODEL_CARD = REPO / "sdk" / "models" / "default" / "MODEL_CARD.md"
BENCHMARKS_README = REPO / "benchmarks" / "README.md"
CHANGELOG = REPO / "CHANGELOG.md"
EXPERIMENTS = REPO / "docs" / "experiments.md"

SIZE_LIMITS = {README: 20_000, MODEL_CARD: 10_000, BENCHMARKS_README: 10_000}
"""Bytes: the front pages stay short; history and details live in docs/, the changelog and the experiments table."""

DEMO_COMMAND = "pip install . && chromaforge demo"


def doc_files() -> list[Path]:
    return [README, BENCHMARKS_README, CHANGELOG, MODEL_CARD, *sorted((REPO / "docs").glob("*.md"))]


_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
_INLINE_LINK = re.compile(r"!?\[(?P<text>(?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*(?P<target><[^>]*>|[^()\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
_REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(?P<target>\S+)", re.M)
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(?P<text>.*?)\s*#*\s*$")
_HTML_ANCHOR = re.compile(r"""<[a-zA-Z][^>]*\s(?:id|name)\s*=\s*["']([^"']+)["']""")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (links and headings inside them are not rendered)."""
    lines, fence = [], None
    for line in text.splitlines():
        m = _FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)[0] * len(m.group(1))
            continue
        if fence is not None:
            if line.strip().startswith(fence) and set(line.strip()) <= set(fence[0]):
                fence = None
            continue
        lines.append(line)
    return lines


def without_code_spans(text: str) -> str:
    return _CODE_SPAN.sub(lambda m: "code", text)


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: its rendered text lower-cased, everything but letters,
    digits, spaces, hyphens and underscores dropped, spaces turned into hyphens."""
    text = _CODE_SPAN.sub(lambda m: m.group(2), heading)               # code spans keep their text
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)             # links and images keep their text
    text = re.sub(r"<[^>]+>", "", text)                                 # inline HTML
    text = re.sub(r"(\*+|(?<!\w)_+|_+(?!\w))", "", text)                # emphasis markers
    text = unicodedata.normalize("NFC", text).strip().lower()
    text = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LN")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a Markdown file offers: heading slugs (repeats get -1, -2, ...) and HTML ids."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        found.update(_HTML_ANCHOR.findall(line))
        m = _HEADING.match(line)
        if not m:
            continue
        slug = github_slug(m.group("text"))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def links(path: Path) -> list[str]:
    """Targets of the inline links, images and reference definitions a Markdown file renders."""
    text = without_code_spans("\n".join(prose_lines(path.read_text(encoding="utf-8"))))
    targets = [m.group("target") for m in _INLINE_LINK.finditer(text)]
    targets += [m.group("target") for m in _REFERENCE_DEF.finditer(text)]
    return [t[1:-1] if t.startswith("<") and t.endswith(">") else t for t in targets]


def is_external(target: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target)) or target.startswith("//")


def broken_links(path: Path) -> list[str]:
    problems = []
    for target in links(path):
        if is_external(target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{target}: {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest} does not exist")
            continue
        if anchor and dest.suffix.lower() == ".md" and unquote(anchor).lower() not in anchors(dest):
            problems.append(f"{target}: no heading #{anchor} in {dest.relative_to(REPO)}")
    return problems


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_and_images_resolve(path: Path):
    assert path.exists(), f"{path.relative_to(REPO)} is missing"
    problems = broken_links(path)
    assert not problems, f"{path.relative_to(REPO)} has broken links:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", list(SIZE_LIMITS), ids=lambda p: str(p.relative_to(REPO)))
def test_front_pages_stay_within_their_size(path: Path):
    size = path.stat().st_size
    limit = SIZE_LIMITS[path]
    assert size <= limit, (f"{path.relative_to(REPO)} is {size:,} bytes, over its {limit:,}: move detail to a guide "
                           "under docs/, CHANGELOG.md or docs/experiments.md")


def test_readme_keeps_the_commands_ci_and_users_run():
    """.ci/run runs the README's test command verbatim; the demo command is the README's first step."""
    readme = README.read_text(encoding="utf-8")
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    test_command = next(line for line in ci_lines if line.startswith("python -m pip install") and "pytest" in line)
    assert test_command in readme.splitlines(), f"README lost the CI command {test_command!r}"
    assert DEMO_COMMAND in readme.splitlines(), f"README lost the demo command {DEMO_COMMAND!r}"


def test_experiments_table_rows_have_four_cells():
    """docs/experiments.md is one table per area with the columns what | command | result | verdict;
    an unescaped | inside a cell would shift the columns on GitHub."""
    bad = []
    for n, line in enumerate(prose_lines(EXPERIMENTS.read_text(encoding="utf-8")), 1):
        if line.startswith("|"):
            cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
            if len(cells) != 4:
                bad.append(f"line {n}: {len(cells)} cells: {line[:80]}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("heading, slug", [
    ("Folder jobs on Ray (`--executor ray`)", "folder-jobs-on-ray---executor-ray"),
    ("GPU: FP16, TensorRT, Triton", "gpu-fp16-tensorrt-triton"),
    ("Multi-node GPU cluster (recipe; NOT run)", "multi-node-gpu-cluster-recipe-not-run"),
    ("Training data and their licences", "training-data-and-their-licences"),
    ("Peak memory (issue 9)", "peak-memory-issue-9"),
])
def test_github_slugs(heading: str, slug: str):
    assert github_slug(heading) == slug
