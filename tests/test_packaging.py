"""The package as a user meets it: a wheel, installed into a fresh venv, used outside the repo."""

from __future__ import annotations

import site
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_and_works_outside_the_repo(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("chatumm-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for package in ("synth", "ops", "taxonomy", "train", "prompts"):
        assert f"{package}/__init__.py" in names, f"{package} missing from the wheel"
    assert not [n for n in names if n.startswith("tests/")]
    templates = [n for n in names if n.startswith("prompts/") and n.endswith(".j2")]

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    # The dependencies come from the current environment (no network in tests): a .pth line adds
    # its site-packages after the venv's own. .pth files inside it are not processed, so an
    # editable install of the repo there stays invisible.
    venv_site = subprocess.run(
        [str(py), "-c", "import site; print(site.getsitepackages()[0])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(venv_site, "deps-from-test-env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    help_text = subprocess.run(
        [str(venv / "bin" / "synth"), "--help"],
        cwd=outside,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "validate" in help_text
    where = subprocess.run(
        [str(py), "-c", "import taxonomy, synth; print(synth.__file__)"],
        cwd=outside,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert str(venv) in where, "imported the repo instead of the installed wheel"
    if templates:
        rendered = subprocess.run(
            [
                str(py),
                "-c",
                "import random; from ops import OPS; "
                "print(OPS['caption2query'].render({'caption': 'A red bicycle leans on a wall.'}, random.Random(0)))",
            ],
            cwd=outside,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        assert "red bicycle" in rendered
