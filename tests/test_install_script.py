"""install.sh refuses, in one line and before pip runs, an interpreter or an existing .venv that is not Python 3.11
(pyproject.toml's requires-python), so a retry with PYTHON=python3.11 is not silently given the old venv."""

import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "install.sh"


def fake_python(path: Path, version: str) -> Path:
    """An interpreter that answers the version question only; anything else (pip, venv) is recorded as a call."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/usr/bin/env bash\n[ \"$1\" = -c ] && [[ \"$2\" == *version_info* ]] && "
                    f"{{ echo {version}; exit 0; }}\necho \"$*\" >> \"$(dirname \"$0\")/calls\"\n")
    path.chmod(0o755)
    return path


def install(folder: Path, python: Path) -> subprocess.CompletedProcess:
    shutil.copy(SCRIPT, folder / "install.sh")
    return subprocess.run(["bash", str(folder / "install.sh")], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": str(python)})


def test_another_python_is_refused_before_a_venv_is_made(tmp_path):
    python = fake_python(tmp_path / "bin" / "python3", "3.12")
    done = install(tmp_path, python)
    assert done.returncode == 2
    assert done.stderr == (f"install.sh: error: PYTHON: {python} is Python 3.12; allowed: a Python 3.11 "
                           "(PYTHON=python3.11 ./install.sh)\n")
    assert not (tmp_path / ".venv").exists() and not (tmp_path / "bin" / "calls").exists()


def test_an_existing_venv_of_another_python_is_refused_not_reused(tmp_path):
    venv_python = fake_python(tmp_path / ".venv" / "bin" / "python", "3.12")
    done = install(tmp_path, fake_python(tmp_path / "bin" / "python3.11", "3.11"))
    assert done.returncode == 2
    assert done.stderr == ("install.sh: error: .venv: it has Python 3.12; allowed: 3.11 "
                           "(remove .venv, then PYTHON=python3.11 ./install.sh)\n")
    assert not (venv_python.parent / "calls").exists()  # pip never ran


def test_a_python_that_does_not_run_is_named(tmp_path):
    done = install(tmp_path, tmp_path / "no-such-python")
    assert done.returncode == 2
    assert "PYTHON: " + str(tmp_path / "no-such-python") + " is Python none (it does not run)" in done.stderr


def test_python_3_11_goes_on_to_make_the_venv_and_install(tmp_path):
    python = fake_python(tmp_path / "bin" / "python3.11", "3.11")
    done = install(tmp_path, python)
    # the fake makes no venv, so the script stops at pip; what matters is that it got past the check
    assert (tmp_path / "bin" / "calls").read_text() == "-m venv .venv\n"
    assert "error: PYTHON" not in done.stderr and done.returncode != 0
