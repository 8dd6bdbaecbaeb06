"""Replay: verdicts, expectations and causes, bad input, and real replays of built bundles.

Fast tests compare run directories written through the bundle format itself (seal_bundle, add_run) with
hand-made metrics; the slow ones build the quickstart and replay it with the real venv runner.

DIVERGED for real: a variant of the quickstart project with one change ([train] seed = 99) is built and
run; its run is then added to a copy of the original bundle with bundle.add_run (the way a run made
elsewhere is recorded), so the copy passes verify and its recorded run was made under another seed.
Replaying it runs the recipe (seed 1234) and must say DIVERGED and name determinism.seed as the cause.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import tomllib

from bundler.audit.replay import Tolerance, pick_recorded_run, read_run
from bundler.audit.runcompare import parse_tolerance
from bundler.bundle.bag import RUNS, add_run, list_runs
from bundler.bundle.verify import verify_bundle
from bundler.errors import InputError, ToleranceError
from bundler.publish.provenance import write_provenance
from tests.conftest import git, make_git_project, run_cli
from tests.fixtures.recorded_runs import LOSSES, compare, env_record, make_bundle, record


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    path = tmp_path / "staging"
    path.mkdir()
    return path


def test_same_adapter_and_steps_are_identical_and_expected_so(tmp_path: Path, staging: Path) -> None:
    bundle = make_bundle(tmp_path)
    old = record(bundle, staging, "a", LOSSES)
    new = record(bundle, staging, "b", LOSSES)
    assert new != old
    report = compare(bundle, old, new)
    assert report["verdict"] == "IDENTICAL"
    assert report["expected"] == "IDENTICAL"
    assert report["adapter"]["bytes_equal"] and report["causes"] == []
    assert report["recorded_run_matches_bundle"] is True


def test_small_differences_are_equivalent_and_a_library_change_explains_the_expectation(
    tmp_path: Path, staging: Path
) -> None:
    bundle = make_bundle(tmp_path)
    old = record(bundle, staging, "a", LOSSES)
    noisy = [x * (1 + 1e-4) for x in LOSSES]  # eval losses move by < 0.001 absolute
    new = record(
        bundle,
        staging,
        "b",
        noisy,
        adapter=b"other-bits",
        env=env_record(libraries={"torch": "2.12.0+cpu", "transformers": "5.24.0", "peft": "0.21.2"}),
    )
    report = compare(bundle, old, new)
    assert report["verdict"] == "EQUIVALENT"
    assert report["expected"] == "EQUIVALENT"
    assert any("library.torch" in line for line in report["expectation"])
    assert report["steps"]["fields"]["loss"]["first_difference_step"] == 1
    assert report["causes"] == []  # not worse than expected


def test_first_step_outside_the_bound_is_named_with_its_size(tmp_path: Path, staging: Path) -> None:
    bundle = make_bundle(tmp_path)
    old = record(bundle, staging, "a", LOSSES)
    bent = list(LOSSES)
    bent[6] *= 1.01  # step 7: 1% off
    bent[7:] = [x * 1.02 for x in bent[7:]]
    new = record(bundle, staging, "b", bent, adapter=b"drifted")
    report = compare(bundle, old, new)
    assert report["verdict"] == "DIVERGED"
    assert report["divergence"]["step"] == 7
    assert report["divergence"]["field"] == "loss"
    assert report["divergence"]["rel"] == pytest.approx(0.01 / 1.01, rel=1e-6)
    # same fingerprints, deterministic: worse than expected, and nothing to blame but the run itself
    assert report["expected"] == "IDENTICAL"
    assert "no recorded fingerprint field differs" in report["causes"][0]


def test_a_looser_loss_bound_turns_the_same_difference_into_equivalent(tmp_path: Path, staging: Path) -> None:
    bundle = make_bundle(tmp_path)
    old = record(bundle, staging, "a", LOSSES)
    new = record(
        bundle,
        staging,
        "b",
        [x * 1.005 for x in LOSSES],
        adapter=b"drifted",
        evals={"val_loss": LOSSES[-1] * 1.005 + 0.1, "accuracy": 0.5},
    )
    assert compare(bundle, old, new)["verdict"] == "DIVERGED"
    assert compare(bundle, old, new, loss=0.01, grad_norm=0.01, metric=0.05)["verdict"] == "EQUIVALENT"


def test_an_eval_metric_outside_its_absolute_bound_diverges(tmp_path: Path, staging: Path) -> None:
    bundle = make_bundle(tmp_path)
    old = record(bundle, staging, "a", LOSSES)
    new = record(bundle, staging, "b", LOSSES, adapter=b"x", evals={"val_loss": LOSSES[-1] + 0.1, "accuracy": 0.502})
    report = compare(bundle, old, new)
    assert report["verdict"] == "DIVERGED"
    assert report["divergence"]["field"] == "eval.accuracy"
    assert report["divergence"]["abs"] == pytest.approx(0.002)


def test_nondeterministic_recorded_run_expects_only_equivalence_and_says_so(tmp_path: Path, staging: Path) -> None:
    bundle = make_bundle(tmp_path, deterministic=False)
    nondet = env_record(determinism={"seed": {"value": 1234}, "torch.use_deterministic_algorithms": {"value": False}})
    old = record(bundle, staging, "a", LOSSES, env=nondet)
    new = record(bundle, staging, "b", [x * 1.05 for x in LOSSES], adapter=b"y", env=nondet)
    report = compare(bundle, old, new)
    assert report["deterministic"] is False
    assert report["expected"] == "EQUIVALENT"
    assert "deterministic = false" in report["expectation"][0]
    assert report["verdict"] == "DIVERGED"
    assert "the recorded run was made with deterministic = false" in report["causes"]


def test_partial_comparison_skips_adapter_and_final_metrics(tmp_path: Path, staging: Path) -> None:
    bundle = make_bundle(tmp_path)
    old = record(bundle, staging, "a", LOSSES)
    new = record(bundle, staging, "b", LOSSES[:5], adapter=b"after-five", evals={"val_loss": 9.0}, max_steps_override=5)
    report = compare(bundle, old, new, steps=5)
    assert report["partial"] is True and report["steps_compared"] == 5
    assert report["verdict"] == "IDENTICAL"
    assert report["adapter"] == {"compared": False}
    assert [row["name"] for row in report["eval"]] == ["val_loss@5"]
    assert "partial replay: only the first 5 of 12 steps" in report["notes"][0]


def test_latest_full_run_is_compared_by_default_not_a_partial_replay(tmp_path: Path, staging: Path) -> None:
    bundle = make_bundle(tmp_path)
    full = record(bundle, staging, "a", LOSSES)
    record(bundle, staging, "b", LOSSES[:3], adapter=b"3", max_steps_override=3)
    assert len(list_runs(bundle)) == 2
    assert pick_recorded_run(bundle, None) == full


def test_tolerance_parses_any_subset_and_keeps_the_defaults() -> None:
    assert parse_tolerance(None) == Tolerance()
    assert parse_tolerance("metric=0.01, loss=1e-4") == Tolerance(metric=0.01, loss=1e-4, grad_norm=1e-2)
    assert parse_tolerance("grad-norm=0.5").grad_norm == 0.5


@pytest.mark.parametrize("text", ["loss", "loss=abc", "los=1e-3", "metric=-1", "loss=nan", "loss=1,loss=2", "=3"])
def test_unparseable_tolerance_is_refused(text: str) -> None:
    with pytest.raises(ToleranceError) as caught:
        parse_tolerance(text)
    assert caught.value.exit_code == 2 and caught.value.hint


def test_unknown_tolerance_key_suggests_the_nearest(tmp_path: Path) -> None:
    with pytest.raises(ToleranceError, match="did you mean 'loss'"):
        parse_tolerance("los=1e-3")


# --- bad input through the real CLI: exit 2, nothing runs ---


def test_cli_refuses_an_unparseable_tolerance_before_running(tmp_path: Path, staging: Path) -> None:
    bundle = make_bundle(tmp_path)
    record(bundle, staging, "a", LOSSES)
    result = run_cli("replay", str(bundle), "--tolerance", "metric=lots")
    assert result.returncode == 2
    assert "cannot parse --tolerance" in result.stderr and "hint:" in result.stderr
    assert len(list_runs(bundle)) == 1


def test_cli_refuses_a_bundle_with_no_recorded_run(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    result = run_cli("replay", str(bundle))
    assert result.returncode == 2
    assert "has no recorded run" in result.stderr


def test_cli_refuses_an_unknown_run_id(tmp_path: Path, staging: Path) -> None:
    bundle = make_bundle(tmp_path)
    known = record(bundle, staging, "a", LOSSES)
    result = run_cli("replay", str(bundle), "--run", "deadbeef")
    assert result.returncode == 2
    assert "'deadbeef' does not exist" in result.stderr and known[:12] in result.stderr


def test_cli_never_replays_a_bundle_that_fails_verify(tmp_path: Path, staging: Path) -> None:
    bundle = make_bundle(tmp_path)
    run_id = record(bundle, staging, "a", LOSSES)
    (bundle / RUNS / run_id / "metrics.jsonl").write_text("{}\n")
    result = run_cli("replay", str(bundle))
    assert result.returncode == 2
    assert "verify failed" in result.stderr and "never replayed" in result.stderr
    assert list_runs(bundle) == [run_id]


def test_cli_refuses_zero_steps(tmp_path: Path, staging: Path) -> None:
    bundle = make_bundle(tmp_path)
    record(bundle, staging, "a", LOSSES)
    result = run_cli("replay", str(bundle), "--steps", "0")
    assert result.returncode == 2 and "--steps must be at least 1" in result.stderr


def test_read_run_without_results_is_an_input_error(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    (bundle / RUNS / "abc").mkdir(parents=True)
    with pytest.raises(InputError, match="no results.json"):
        read_run(bundle, "abc")


# --- real builds and replays (venv runner) ---


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The quickstart, and a variant whose only change is [train] seed = 99, both built and run once."""
    from tests.conftest import QUICKSTART

    root = tmp_path_factory.mktemp("replay")
    project = make_git_project(QUICKSTART, root / "quickstart")
    original = root / "original"
    result = run_cli("build", str(project), "--out", str(original))
    assert result.returncode == 0, result.stderr
    config = (project / "bundle.toml").read_text()
    assert "[train]\n" in config and "seed =" not in config.split("[train]")[1].split("[")[0]
    (project / "bundle.toml").write_text(config.replace("[train]\n", "[train]\nseed = 99\n", 1))
    git(project, "commit", "-q", "-am", "variant: train seed 99")
    variant = root / "variant"
    result = run_cli("build", str(project), "--out", str(variant))
    assert result.returncode == 0, result.stderr
    return {"root": root, "original": original, "variant": variant}


def copy_bundle(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


@pytest.mark.slow
def test_replaying_a_venv_run_is_identical(built: dict[str, Path]) -> None:
    bundle = copy_bundle(built["original"], built["root"] / "identical")
    recorded = list_runs(bundle)
    result = run_cli("replay", str(bundle), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["schema"] == "bundler.replay/1"
    assert (report["verdict"], report["expected"]) == ("IDENTICAL", "IDENTICAL")
    assert report["recorded_run"] == recorded[0] and report["replay_run"] not in recorded
    assert report["adapter"]["bytes_equal"] and report["steps"]["compared"] == 40
    assert report["replay_runner"] == "venv"
    assert verify_bundle(bundle).ok  # the replay is a new, sealed run of the bundle
    assert len(list_runs(bundle)) == 2


@pytest.mark.slow
def test_partial_replay_runs_and_compares_only_the_first_steps(built: dict[str, Path]) -> None:
    bundle = copy_bundle(built["original"], built["root"] / "partial")
    result = run_cli("replay", str(bundle), "--steps", "5")
    assert result.returncode == 0, result.stderr
    assert "IDENTICAL" in result.stdout and "PARTIAL: first 5 of 40 steps" in result.stdout
    assert "not compared (partial replay)" in result.stdout
    replay_run = [r for r in list_runs(bundle) if r != pick_recorded_run(bundle, None)]
    assert len(replay_run) == 1
    assert json.loads((bundle / RUNS / replay_run[0] / "results.json").read_text())["steps"] == 5


@pytest.mark.slow
def test_a_run_recorded_under_another_seed_diverges_and_names_the_seed(built: dict[str, Path]) -> None:
    bundle = copy_bundle(built["original"], built["root"] / "grafted")
    variant_run = built["variant"] / RUNS / list_runs(built["variant"])[0]
    assert tomllib.loads((built["variant"] / "data/recipe/config.toml").read_text())["train"]["seed"] == 99
    staged = built["root"] / "staged-variant-run"
    shutil.copytree(variant_run, staged, ignore=shutil.ignore_patterns("run.json", "README.md", "loss.png"))
    grafted = add_run(bundle, staged, {"run.json": (variant_run / "run.json").read_bytes()})
    write_provenance(bundle, grafted)
    assert verify_bundle(bundle).ok

    result = run_cli("replay", str(bundle), "--run", grafted[:12], "--json", "--report", str(bundle.parent / "rep"))
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"] == "DIVERGED" and report["expected"] == "EQUIVALENT"
    assert report["divergence"]["step"] == 1
    assert report["divergence"]["rel"] > 1e-3
    assert "determinism.seed: recorded 99, replay 1234" in report["causes"]
    assert "DIVERGED" in result.stderr and "determinism.seed" in result.stderr
    written = sorted(p.name for p in (bundle.parent / "rep").iterdir())
    assert written == ["loss_overlay.png", "report.html", "report.json"]
