"""The bundle format: identity from the recipe alone, runs beside it, verify catching every change."""

from __future__ import annotations

from pathlib import Path

import pytest

from bundler.bundle import bag as fmt
from bundler.bundle.verify import verify_bundle
from bundler.errors import InputError, NotABundleError
from tests.conftest import run_cli
from tests.fixtures.bundles import add_fake_run, make_bundle


def findings(bundle: Path) -> list[str]:
    """Findings as the CLI prints them ("<path>: <detail>")."""
    return [str(f) for f in verify_bundle(bundle).findings]


def kinds(bundle: Path) -> set[tuple[str, str]]:
    return {(f.kind, f.path) for f in verify_bundle(bundle).findings}


def test_bundle_id_depends_on_the_recipe_only(tmp_path: Path) -> None:
    a = make_bundle(tmp_path / "a")
    b = make_bundle(tmp_path / "elsewhere" / "b")
    assert fmt.bundle_id_of(a) == fmt.bundle_id_of(b)
    c = make_bundle(tmp_path / "c", config="seed = 2\n")
    assert fmt.bundle_id_of(c) != fmt.bundle_id_of(a)


def test_a_run_never_changes_the_bundle_id(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b")
    before = fmt.bundle_id_of(bundle)
    run_id = add_fake_run(bundle, tmp_path)
    assert fmt.bundle_id_of(bundle) == before
    assert (bundle / "data" / "runs" / run_id / "run.json").is_file()
    assert findings(bundle) == []


def test_run_id_covers_outputs_but_not_annotations(tmp_path: Path) -> None:
    one = make_bundle(tmp_path / "one")
    two = make_bundle(tmp_path / "two")
    assert add_fake_run(one, tmp_path / "x") == add_fake_run(two, tmp_path / "y")
    three = make_bundle(tmp_path / "three")
    assert add_fake_run(three, tmp_path / "z", payload=b"other") != fmt.list_runs(one)[0]


def test_verify_catches_a_one_byte_change(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b")
    target = bundle / "data" / "recipe" / "config.toml"
    target.write_text("seed = 3\n")
    assert ("changed-file", "data/recipe/config.toml") in kinds(bundle)


def test_verify_catches_removed_added_and_renamed_files_all_at_once(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b")
    recipe = bundle / "data" / "recipe"
    (recipe / "requirements.lock").unlink()
    (recipe / "extra.txt").write_text("planted\n")
    (recipe / "runtime" / "__init__.py").rename(recipe / "runtime" / "moved.py")
    found = findings(bundle)
    assert "data/recipe/requirements.lock: listed in manifest-sha256.txt, not in the bag" in found
    assert "data/recipe/extra.txt: in the bag, not listed in manifest-sha256.txt" in found
    assert (
        "data/recipe/runtime/moved.py: manifest-sha256.txt lists these bytes as data/recipe/runtime/__init__.py"
        in found
    )


def test_verify_catches_a_changed_tag_file(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b")
    info = bundle / "bag-info.txt"
    info.write_text(info.read_text() + "Contact-Name: mallory\n")
    assert ("changed-file", "bag-info.txt") in kinds(bundle)


def test_a_forged_bundle_id_is_caught(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b")
    (bundle / "data" / "recipe" / "config.toml").write_text("seed = 9\n")
    fmt.seal_bundle(bundle)  # an attacker re-seals after changing the recipe...
    info = bundle / "bag-info.txt"
    original = make_bundle(tmp_path / "orig")
    text = info.read_text().replace(fmt.bundle_id_of(bundle), fmt.bundle_id_of(original))
    info.write_text(text)  # ...and claims the old ID
    assert ("bundle-id", "bag-info.txt") in kinds(bundle)


def test_bundle_is_a_valid_bagit_bag_for_an_independent_checker(tmp_path: Path) -> None:
    bagit = pytest.importorskip("bagit")
    bundle = make_bundle(tmp_path / "b")
    add_fake_run(bundle, tmp_path)
    bag = bagit.Bag(str(bundle))
    bag.validate()
    assert bag.info["Bundle-Format"] == "bundler/1"
    assert bag.info["Bundle-Id"] == fmt.bundle_id_of(bundle)


def test_manifest_line_with_a_bad_hash_is_a_finding_naming_the_line(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b")
    manifest = bundle / "manifest-sha256.txt"
    manifest.write_text("nothex  data/recipe/config.toml\n" + manifest.read_text())
    found = verify_bundle(bundle).findings
    assert any(f.kind == "manifest-syntax" and f.path == "manifest-sha256.txt" and "line 1" in f.detail for f in found)


def test_unknown_format_version_is_not_a_bundle(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b")
    info = bundle / "bag-info.txt"
    info.write_text(info.read_text().replace("bundler/1", "bundler/9"))
    with pytest.raises(NotABundleError, match="bundler/9"):
        fmt.open_bundle(bundle)


def test_resolve_run_accepts_a_prefix_and_rejects_unknown_ids(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b")
    with pytest.raises(InputError, match="no recorded run"):
        fmt.resolve_run(bundle, None)
    run_id = add_fake_run(bundle, tmp_path)
    assert fmt.resolve_run(bundle, run_id[:8]) == run_id
    with pytest.raises(InputError, match="does not exist"):
        fmt.resolve_run(bundle, "ffff")


def test_verify_cli_exit_codes_and_json(tmp_path: Path) -> None:
    import json

    bundle = make_bundle(tmp_path / "b")
    ok = run_cli("verify", str(bundle))
    assert ok.returncode == 0 and ok.stdout.startswith("ok ")
    (bundle / "data" / "recipe" / "config.toml").write_text("seed = 5\n")
    bad = run_cli("verify", str(bundle))
    assert bad.returncode == 1
    assert "data/recipe/config.toml: manifest-sha256.txt says sha256" in bad.stderr
    assert bad.stderr.count("\nhint: ") == 1 and "Traceback" not in bad.stderr
    as_json = run_cli("verify", str(bundle), "--json")
    report = json.loads(as_json.stdout)
    assert as_json.returncode == 1 and report["schema"] == "bundler.verify/2" and not report["ok"]
    assert [(f["kind"], f["path"]) for f in report["findings"]] == [("changed-file", "data/recipe/config.toml")]
    missing = run_cli("verify", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "not a bundle" in missing.stderr


# --- everything recomputable is recomputed (issue 15) ---


def _two_runs(tmp_path: Path) -> tuple[Path, str, str]:
    bundle = make_bundle(tmp_path / "b")
    first = add_fake_run(bundle, tmp_path / "one", payload=b"first weights")
    second = add_fake_run(bundle, tmp_path / "two", payload=b"second weights")
    return bundle, first, second


def test_a_run_copied_under_a_made_up_id_is_caught_even_when_resealed(tmp_path: Path) -> None:
    import shutil

    bundle, first, _ = _two_runs(tmp_path)
    fake = "f" * 64
    shutil.copytree(bundle / fmt.RUNS / first, bundle / fmt.RUNS / fake)
    shutil.copy(bundle / f"provenance/{first}.intoto.json", bundle / f"provenance/{fake}.intoto.json")
    fmt.seal_bundle(bundle)  # manifests, Payload-Oxum and tag manifest all agree again
    found = verify_bundle(bundle).findings
    assert any(f.kind == "run-id" and f.path == f"{fmt.RUNS}/{fake}/" for f in found)
    assert not any(f.path == f"{fmt.RUNS}/{first}/" for f in found)


def test_a_file_added_to_a_run_is_named_with_its_run(tmp_path: Path) -> None:
    bundle, first, _ = _two_runs(tmp_path)
    planted = f"{fmt.RUNS}/{first}/adapter/extra.safetensors"
    (bundle / planted).write_bytes(b"planted")
    fmt.seal_bundle(bundle)
    found = verify_bundle(bundle).findings
    assert any(f.kind == "run-id" and f.path == f"{fmt.RUNS}/{first}/" for f in found)
    assert any(f.kind == "statement" and f.path == planted and first[:12] in f.detail for f in found)


def test_adapters_swapped_between_runs_are_caught(tmp_path: Path) -> None:
    bundle, first, second = _two_runs(tmp_path)
    a = bundle / fmt.RUNS / first / "adapter" / "adapter_model.safetensors"
    b = bundle / fmt.RUNS / second / "adapter" / "adapter_model.safetensors"
    a_bytes, b_bytes = a.read_bytes(), b.read_bytes()
    a.write_bytes(b_bytes)
    b.write_bytes(a_bytes)
    fmt.seal_bundle(bundle)
    found = verify_bundle(bundle).findings
    assert {(f.kind, f.path) for f in found if f.kind == "run-id"} == {
        ("run-id", f"{fmt.RUNS}/{first}/"),
        ("run-id", f"{fmt.RUNS}/{second}/"),
    }


def test_deleting_provenance_fails_verify(tmp_path: Path) -> None:
    import shutil

    bundle, first, second = _two_runs(tmp_path)
    shutil.rmtree(bundle / "provenance")
    fmt.seal_bundle(bundle)
    found = verify_bundle(bundle).findings
    assert {f.path for f in found if f.kind == "statement"} == {
        f"provenance/{first}.intoto.json",
        f"provenance/{second}.intoto.json",
    }
    assert run_cli("verify", str(bundle)).returncode == 1


def test_names_with_newline_and_percent_are_percent_encoded_and_valid_for_bagit(tmp_path: Path) -> None:
    bagit = pytest.importorskip("bagit")
    bundle = make_bundle(tmp_path / "b")
    (bundle / "data" / "vendor").mkdir()
    odd = bundle / "data" / "recipe" / "notes\nline two.txt"
    odd.write_text("odd name\n")
    fmt.seal_bundle(bundle)
    text = (bundle / fmt.MANIFEST).read_text()
    assert "data/recipe/notes%0Aline two.txt\n" in text
    assert verify_bundle(bundle).findings == []
    bagit.Bag(str(bundle)).validate()
    (bundle / "data" / "recipe" / "100%.txt").write_text("percent\n")
    fmt.seal_bundle(bundle)
    assert "data/recipe/100%25.txt\n" in (bundle / fmt.MANIFEST).read_text()
    assert verify_bundle(bundle).findings == []


def test_a_non_utf8_tag_file_gets_a_clear_finding_not_an_internal_error(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b")
    info = bundle / "bag-info.txt"
    info.write_bytes(info.read_bytes() + b"Contact-Name: Andr\xe9\n")
    result = run_cli("verify", str(bundle))
    assert result.returncode == 1, result.stderr
    assert "bag-info.txt: is not UTF-8" in result.stderr and "internal error" not in result.stderr
