"""The project speaks only of itself: no tracked text file (code, docs, README, results,
page templates) refers to its development by a numbered session or issue."""

from __future__ import annotations

import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: a word for a unit of development work, then a number ("#" optional)
HISTORY = re.compile(r"\b(?:session|issue)s?[ \t]*(?:no\.?|number)?[ \t]*#?[ \t]*\d",
                     re.IGNORECASE)
SKIP_DIRS = {".git", "__pycache__", "node_modules", ".venv", "venv", "results", "build",
             "dist", ".pytest_cache", ".ruff_cache"}


def project_files() -> list[str]:
    """The tracked files (``git ls-files``), else every file below the root."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             timeout=60, check=True).stdout
        files = [f for f in out.decode().split("\0") if f]
        if files:
            return files
    except (OSError, subprocess.SubprocessError):
        pass
    files = []
    for folder, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        files += [os.path.relpath(os.path.join(folder, n), ROOT) for n in names]
    return files


def text_of(path: str) -> str | None:
    """The file's text, or None for a binary file (a NUL byte, or not UTF-8)."""
    try:
        with open(os.path.join(ROOT, path), "rb") as f:
            data = f.read(2_000_000)
    except OSError:
        return None
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def mentions(text: str) -> list[tuple[int, str]]:
    return [(text.count("\n", 0, m.start()) + 1, m.group(0)) for m in HISTORY.finditer(text)]


def test_the_pattern_finds_numbered_sessions_and_issues():
    word_s, word_i = "sess" + "ion", "iss" + "ue"   # spelled apart: this file is checked too
    for text in (f"{word_s} 6", f"{word_i} 14", f"{word_i} #4", f"({word_i.upper()}#21)",
                 f"{word_s.title()}s 5", f"see {word_i}  7's figures", f"{word_i} no. 3"):
        assert mentions(text), text
    for text in (f"{word_i}d 4 tokens", f"this {word_s}'s 2 files", f"{word_i}s",
                 f"a known {word_i}: 3 bytes", f"mis{word_i} 4"):
        assert not mentions(text), text


def test_no_tracked_text_file_speaks_of_development_history():
    found = []
    checked = 0
    for path in project_files():
        text = text_of(path)
        if text is None:
            continue
        checked += 1
        found += [f"{path}:{line}: {hit!r}" for line, hit in mentions(text)]
    assert checked > 100
    assert not found, "numbered sessions or issues mentioned:\n" + "\n".join(found)
