"""The repository stands alone: nothing in it refers to a file outside it, and a fresh clone with nothing
beside it runs the tests that once read the spec from a sibling folder (issue #9)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# A Markdown link or image target: [text](target) or ![alt](target).
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")
TEXT_SUFFIXES = {".py", ".md", ".toml", ".cfg", ".ini", ".yaml", ".yml", ".html", ".css", ".js", ".mako", ".txt", ""}


def _tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]


@pytest.fixture(scope="module")
def tracked() -> list[Path]:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout (these checks read `git ls-files`)")
    return _tracked_files()


def test_no_file_names_a_sibling_folder(tracked: list[Path]) -> None:
    """No tracked text names `../shared` (or any path into the folder that holds the clone)."""
    offenders = []
    for path in tracked:
        if path.suffix not in TEXT_SUFFIXES or not path.is_file() or path == Path(__file__).resolve():
            continue
        text = path.read_text(errors="replace")
        if "../shared" in text or "/shared/spec" in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_markdown_links_stay_inside_the_repository(tracked: list[Path]) -> None:
    """Every relative link in README, docs/ and the rest resolves to a file or folder of this repository."""
    broken = []
    for path in tracked:
        if path.suffix != ".md":
            continue
        for target in MD_LINK.findall(path.read_text()):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # an absolute URL (https:, mailto:) or an anchor in the same page
            resolved = (path.parent / target.split("#", 1)[0]).resolve()
            if not resolved.is_relative_to(ROOT) or not resolved.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert broken == []


@pytest.mark.e2e
def test_a_fresh_clone_runs_the_spec_tests_with_nothing_beside_it(tmp_path: Path, tracked: list[Path]) -> None:
    """`git clone` of the committed tree into an empty folder runs the OpenAPI-vs-spec tests and passes."""
    clone = tmp_path / "lonely" / "auditkeep"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    assert sorted(p.name for p in clone.parent.iterdir()) == ["auditkeep"]
    env = {**os.environ, "PYTHONPATH": str(clone / "src")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/api/test_openapi.py",
         "tests/test_repository.py::test_no_file_names_a_sibling_folder"],
        check=False, cwd=clone, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout
