"""Golden values: a CPU build in the locked environment must reproduce the committed adapter and loss curve.

Run-against-run tests cannot see a numeric change that every run shares (a library upgrade, a changed
kernel); these compare with values recorded once. On a mismatch the failure says which library, which
setting and which first step moved (tests/fixtures/golden_values.py). Re-bless on purpose with
`BUNDLER_BLESS=1 python3 -m pytest -p no:cacheprovider tests/test_golden.py` and commit the diff of
tests/golden/*.json.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

from tests.conftest import QUICKSTART, make_git_project, run_cli
from tests.fixtures.golden_values import BLESS_COMMAND, explain, golden_record, is_failure, read_golden, write_golden


def compare_or_bless(bundle: Path, example: str) -> None:
    current = golden_record(bundle, example)
    if os.environ.get("BUNDLER_BLESS") == "1":
        pytest.skip(f"blessed: wrote {write_golden(current)}")
    differences = explain(read_golden(example), current)
    if is_failure(differences):
        pytest.fail(
            f"{example}: the build no longer reproduces its golden values\n  "
            + "\n  ".join(text for _, text in differences)
            + f"\nIf this change is intended, re-bless: {BLESS_COMMAND}",
            pytrace=False,
        )


@pytest.mark.slow
def test_the_cpu_quickstart_reproduces_its_golden_adapter_and_loss_curve(built_quickstart: Path) -> None:
    compare_or_bless(built_quickstart, "quickstart")


@pytest.mark.slow
def test_the_tiny_fixture_reproduces_its_golden_adapter_and_loss_curve(tmp_path: Path) -> None:
    project = make_git_project(QUICKSTART, tmp_path / "tiny")
    result = run_cli("build", str(project), "--out", str(tmp_path / "bundle"))
    assert result.returncode == 0, result.stderr[-3000:]
    compare_or_bless(tmp_path / "bundle", "tiny")


def test_a_mismatch_names_the_library_the_setting_and_the_first_step_that_moved() -> None:
    golden = read_golden("tiny")
    current = copy.deepcopy(golden)
    current["locked"]["peft"] = "0.21.0"
    current["settings"]["train"]["learning_rate"] = 0.004
    current["loss"][4] += 1e-6
    current["adapter_sha256"] = "f" * 64
    texts = [text for _, text in explain(golden, current)]
    assert texts[0] == f"library (requirements.lock): peft {golden['locked']['peft']} -> 0.21.0"
    assert "setting: train.learning_rate = 0.003 -> 0.004" in texts
    assert any(t.startswith("first step that moved: step 5: loss ") for t in texts)
    assert is_failure(explain(golden, current))


def test_another_cpu_with_unmoved_numbers_passes_and_a_new_lock_alone_fails() -> None:
    golden = read_golden("tiny")
    other_machine = {**copy.deepcopy(golden), "cpu": {**golden["cpu"], "threads": 64}}
    assert not is_failure(explain(golden, other_machine))
    new_lock = copy.deepcopy(golden)
    new_lock["locked"]["safetensors"] = "0.7.0"
    assert is_failure(explain(golden, new_lock))
    assert explain(golden, new_lock)[-1] == ("note", "the numbers did not move: only the environment record differs")
