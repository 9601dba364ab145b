"""The code passes its linters and type checker as pyproject.toml configures them: ruff (lint and format) and mypy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "src", "tests"],
        ["ruff", "format", "--check", "src", "tests"],
        ["mypy"],  # files and settings from [tool.mypy]
    ],
    ids=["ruff check", "ruff format", "mypy"],
)
def test_code_check_passes(command: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=600)
    status, tail = result.returncode, (result.stdout + result.stderr).strip()[-4000:]
    assert status == 0, f"`{' '.join(command)}` exited with {status}; the end of its output:\n{tail}"
