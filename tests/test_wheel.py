"""templates/ and images/ ship inside the wheel and are found from an installed wheel."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_installed_wheel_runs_help_and_init(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(REPO)],
        check=True,
        capture_output=True,
    )
    wheel = next(dist.glob("*.whl"))
    env_dir = tmp_path / "venv"
    # System site-packages provide the dependencies; the wheel itself is installed into the venv.
    venv.EnvBuilder(with_pip=True, system_site_packages=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall", str(wheel)],
        check=True,
        capture_output=True,
    )
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    where = subprocess.run(
        [str(python), "-c", "import bundler, sys; print(bundler.__file__)"],
        cwd=outside,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(env_dir) in where, "the wheel, not the checkout, must be imported"
    bundler = env_dir / "bin" / "bundler"
    assert subprocess.run([str(bundler), "--help"], cwd=outside, capture_output=True).returncode == 0
    init = subprocess.run([str(bundler), "init", "proj"], cwd=outside, capture_output=True, text=True)
    assert init.returncode == 0, init.stderr
    assert "[project]" in (outside / "proj" / "bundle.toml").read_text()
    templates = subprocess.run(
        [
            str(python),
            "-c",
            "from bundler.paths import resource_dir; print(resource_dir('templates')); "
            "print(sorted(p.name for p in resource_dir('images').glob('*.toml')))",
        ],
        cwd=outside,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(env_dir) in templates.splitlines()[0]
    assert ".toml" in templates.splitlines()[1]
