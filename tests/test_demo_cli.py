"""``python -m train demo``'s command line, without serving (the browser test serves)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from train.demo.cli import host_warning

ROOT = Path(__file__).resolve().parents[1]


def test_the_page_stays_on_this_machine_unless_asked() -> None:
    for host in ("127.0.0.1", "localhost", "::1"):
        assert host_warning(host) is None
    warning = host_warning("0.0.0.0")
    assert warning is not None and "--host 0.0.0.0" in warning and "no login" in warning


def test_the_command_is_listed_with_its_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "train", "demo", "--help"],
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for option in ("--checkpoint", "--port", "--host", "--save-dir", "127.0.0.1", "7860"):
        assert option in result.stdout
