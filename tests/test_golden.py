"""Golden values: a CPU build in the locked environment must reproduce the committed adapter and loss curve.

Run-against-run tests cannot see a numeric change that every run shares (a library upgrade, a changed
kernel); these compare with values recorded once. On a mismatch the failure says which library, which
setting and which first step moved (tests/fixtures/golden.py). Re-bless on purpose with
`BUNDLER_BLESS=1 python3 -m pytest -p no:cacheprovider tests/test_golden.py` and commit the diff of
tests/golden/*.json.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import QUICKSTART, make_git_project, run_cli
from tests.fixtures.golden import BLESS_COMMAND, explain, golden_record, read_golden, write_golden

pytestmark = pytest.mark.slow


def compare_or_bless(bundle: Path, example: str) -> None:
    current = golden_record(bundle, example)
    if os.environ.get("BUNDLER_BLESS") == "1":
        pytest.skip(f"blessed: wrote {write_golden(current)}")
    differences = explain(read_golden(example), current)
    if differences:
        pytest.fail(
            f"{example}: the build no longer reproduces its golden values\n  "
            + "\n  ".join(differences)
            + f"\nIf this change is intended, re-bless: {BLESS_COMMAND}",
            pytrace=False,
        )


def test_the_cpu_quickstart_reproduces_its_golden_adapter_and_loss_curve(built_quickstart: Path) -> None:
    compare_or_bless(built_quickstart, "quickstart")


def test_the_tiny_fixture_reproduces_its_golden_adapter_and_loss_curve(tmp_path: Path) -> None:
    project = make_git_project(QUICKSTART, tmp_path / "tiny")
    result = run_cli("build", str(project), "--out", str(tmp_path / "bundle"))
    assert result.returncode == 0, result.stderr[-3000:]
    compare_or_bless(tmp_path / "bundle", "tiny")
