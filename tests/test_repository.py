"""The repository is self-contained and stays readable: no file cites a document it does not ship, no
file reads from outside the checkout, no source file grows past 500 lines."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT = (".py", ".md", ".yaml", ".yml", ".sh", ".toml", ".cfg", ".txt")
# Design notes that live outside this repository (a reader cannot follow such a reference).
EXTERNAL_DOC = re.compile(r"DESIGN(\.md)? *§|\b(method|stack|lessons|style|s3fd)\.md\b|\.\./shared|shared/reference")
OUTSIDE_PATH = re.compile(r"['\"]/(work|home|root|Users)/")
MAX_LINES = 500


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / f for f in out.splitlines() if f.endswith(TEXT) and (ROOT / f).is_file()]


def test_no_file_cites_a_document_outside_the_repository() -> None:
    files = [f for f in tracked_files() if f.name != Path(__file__).name]  # this file holds the patterns themselves
    bad = [f"{f.relative_to(ROOT)}:{i}: {line.strip()}" for f in files
           for i, line in enumerate(f.read_text(errors="ignore").splitlines(), 1) if EXTERNAL_DOC.search(line)]
    assert not bad, "cite docs/ or state the fact inline:\n" + "\n".join(bad)


def test_no_code_reads_an_absolute_path_outside_the_checkout() -> None:
    py = [f for f in tracked_files() if f.suffix == ".py" and f.name != Path(__file__).name]
    bad = [f"{f.relative_to(ROOT)}:{i}" for f in py
           for i, line in enumerate(f.read_text().splitlines(), 1) if OUTSIDE_PATH.search(line)]
    assert not bad, "ship the data under tests/ instead:\n" + "\n".join(bad)


def test_no_source_file_over_500_lines() -> None:
    long = [f"{f.relative_to(ROOT)}: {n}" for f in tracked_files() if f.suffix == ".py"
            if (n := len(f.read_text().splitlines())) > MAX_LINES]
    assert not long, "split by concept:\n" + "\n".join(long)


def test_the_patterns_catch_what_they_should() -> None:
    assert EXTERNAL_DOC.search("see DESIGN §5") and EXTERNAL_DOC.search("(method.md §8 #9)")
    assert not EXTERNAL_DOC.search("see docs/design.md and docs/metrics.md")
    assert OUTSIDE_PATH.search('REF = Path("/work/shared/x.json")') and not OUTSIDE_PATH.search('Path("/tmp/x")')
