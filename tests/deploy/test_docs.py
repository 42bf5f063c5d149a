"""The docs a newcomer reads: a short README whose links resolve, and benchmark results as data."""
import re
import subprocess
import sys

from helpers import REPO


def test_the_readme_is_short_and_its_links_resolve():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) < 200
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if not target.startswith("http"):
            assert (REPO / target).exists(), target


def test_docs_benchmarks_is_generated_from_the_records():
    """Every record validates, and docs/benchmarks.md is exactly what they make (no hand edits)."""
    done = subprocess.run([sys.executable, "benchmarks/make_docs.py", "--check"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    text = (REPO / "docs" / "benchmarks.md").read_text()
    cells = [c for line in text.splitlines() if line.startswith("|") for c in line.split("|")]
    assert max(map(len, cells)) < 400
    assert not re.search(r"[Ii]ssue \d+", text)


def test_the_docs_cite_no_internal_issue_numbers():
    for path in [REPO / "README.md", *(REPO / "docs").glob("*.md")]:
        assert not re.search(r"\b[Ii]ssues? \d+", path.read_text()), path
