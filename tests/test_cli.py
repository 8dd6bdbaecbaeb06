"""The command line edge: exit codes, one-line errors with a hint, stdout/stderr split, no torch import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, run_cli

PROBE = """
import atexit, sys
HEAVY = ("torch", "transformers", "datasets", "peft")
atexit.register(lambda: sys.stderr.write("\\nHEAVY=" + ",".join(sorted(m for m in HEAVY if m in sys.modules)) + "\\n"))
from bundler.cli import main
sys.argv = ["bundler", *sys.argv[1:]]
main()
"""


def heavy_modules_imported(*args: str) -> str:
    result = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=REPO)
    return result.stderr.rsplit("HEAVY=", 1)[1].strip()


def test_help_lists_the_commands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("init", "build", "verify", "inspect", "run"):
        assert command in result.stdout


def test_unknown_command_is_a_usage_error() -> None:
    assert run_cli("frobnicate").returncode == 2


def test_missing_required_option_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("build", str(tmp_path))
    assert result.returncode == 2 and "--out" in result.stderr


def test_commands_that_do_not_train_never_import_torch(tmp_path: Path) -> None:
    assert heavy_modules_imported("--help") == ""
    assert heavy_modules_imported("verify", str(tmp_path)) == ""
    assert heavy_modules_imported("init", str(tmp_path / "p")) == ""
    assert heavy_modules_imported("inspect", str(tmp_path)) == ""


def test_init_writes_a_valid_config_and_refuses_to_overwrite(tmp_path: Path) -> None:
    first = run_cli("init", str(tmp_path / "proj"))
    assert first.returncode == 0
    assert (tmp_path / "proj" / "bundle.toml").is_file()
    again = run_cli("init", str(tmp_path / "proj"))
    assert again.returncode == 2
    lines = again.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: ")


def test_config_error_is_exit_2_with_every_problem_and_no_traceback(tmp_path: Path) -> None:
    project = tmp_path / "p"
    run_cli("init", str(project))
    config = project / "bundle.toml"
    config.write_text(config.read_text().replace("max_steps = 30", "max_stepz = 30").replace("seed = 0 ", "seed = -1 "))
    result = run_cli("build", str(project), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "did you mean 'max_steps'" in result.stderr and "project.seed" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_debug_variable_shows_the_traceback(tmp_path: Path) -> None:
    result = run_cli("build", str(tmp_path), "--out", str(tmp_path / "o"), env={"BUNDLER_DEBUG": "1"})
    assert result.returncode == 2 and "Traceback" in result.stderr


def test_inspect_json_is_one_object_with_a_schema(tmp_path: Path) -> None:
    from tests.fixtures.bundles import make_bundle

    bundle = make_bundle(tmp_path / "b")
    result = run_cli("inspect", str(bundle), "--json")
    assert result.returncode == 0
    description = json.loads(result.stdout)
    assert description["schema"] == "bundler.inspect/1" and description["runs"] == []
