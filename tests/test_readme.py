"""Runs every Python snippet in README.md as it is written, each in a fresh interpreter, and checks what it prints
against the comments that say what it prints (``print(x)  # b'hello'``): what a user copies from the README works."""

import re
import subprocess
import sys

import pytest

from tests.subprocesses import ROOT

TIMEOUT = 30  # seconds, for each snippet
SNIPPETS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
PROMISED = re.compile(r"print\(.*\)\s+# (.+)$", re.M)


def test_the_readme_has_snippets_to_run():
    assert len(SNIPPETS) >= 3


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[f"snippet-{i}" for i in range(len(SNIPPETS))])
def test_a_readme_snippet_runs_and_prints_what_it_says(snippet):
    promised = PROMISED.findall(snippet)
    assert promised, "a snippet should say what it prints"
    done = subprocess.run(
        [sys.executable, "-c", snippet], capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr
    printed = done.stdout.splitlines()
    for line, expected in zip(printed, promised, strict=False):
        assert line == expected.split("  #")[0].strip()
