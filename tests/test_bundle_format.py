"""The bundle format: identity from the recipe alone, runs beside it, verify catching every change."""

from __future__ import annotations

from pathlib import Path

import pytest

from bundler.bundle import bag as fmt
from bundler.bundle.verify import verify_bundle
from bundler.errors import InputError, NotABundleError
from tests.conftest import run_cli


def make_bundle(root: Path, config: str = "seed = 1\n") -> Path:
    recipe = root / "data" / "recipe"
    (recipe / "runtime").mkdir(parents=True)
    (recipe / "config.toml").write_text(config)
    (recipe / "requirements.lock").write_text("numpy==2.0.0\n")
    (recipe / "runtime" / "__init__.py").write_text("")
    fmt.seal_bundle(root)
    return root


def add_fake_run(bundle: Path, tmp: Path, payload: bytes = b"weights") -> str:
    staged = tmp / "staged"
    (staged / "adapter").mkdir(parents=True)
    (staged / "adapter" / "adapter_model.safetensors").write_bytes(payload)
    (staged / "results.json").write_text("{}\n")
    return fmt.add_run(bundle, staged, {"run.json": b'{"runner": "host"}\n'})


def findings(bundle: Path) -> list[str]:
    return verify_bundle(bundle).findings


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
    assert any(f.startswith("changed payload file: data/recipe/config.toml") for f in findings(bundle))


def test_verify_catches_removed_added_and_renamed_files_all_at_once(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b")
    recipe = bundle / "data" / "recipe"
    (recipe / "requirements.lock").unlink()
    (recipe / "extra.txt").write_text("planted\n")
    (recipe / "runtime" / "__init__.py").rename(recipe / "runtime" / "moved.py")
    found = findings(bundle)
    assert "missing payload file: data/recipe/requirements.lock" in found
    assert "extra payload file: data/recipe/extra.txt" in found
    assert "renamed payload file: data/recipe/runtime/__init__.py -> data/recipe/runtime/moved.py" in found


def test_verify_catches_a_changed_tag_file(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b")
    info = bundle / "bag-info.txt"
    info.write_text(info.read_text() + "Contact-Name: mallory\n")
    assert "changed tag file: bag-info.txt" in " ".join(findings(bundle))


def test_a_forged_bundle_id_is_caught(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b")
    (bundle / "data" / "recipe" / "config.toml").write_text("seed = 9\n")
    fmt.seal_bundle(bundle)  # an attacker re-seals after changing the recipe...
    info = bundle / "bag-info.txt"
    original = make_bundle(tmp_path / "orig")
    text = info.read_text().replace(fmt.bundle_id_of(bundle), fmt.bundle_id_of(original))
    info.write_text(text)  # ...and claims the old ID
    assert any("Bundle-Id" in f for f in findings(bundle))


def test_bundle_is_a_valid_bagit_bag_for_an_independent_checker(tmp_path: Path) -> None:
    bagit = pytest.importorskip("bagit")
    bundle = make_bundle(tmp_path / "b")
    add_fake_run(bundle, tmp_path)
    bag = bagit.Bag(str(bundle))
    bag.validate()
    assert bag.info["Bundle-Format"] == "bundler/1"
    assert bag.info["Bundle-Id"] == fmt.bundle_id_of(bundle)


def test_manifest_line_with_a_bad_hash_is_an_input_error(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b")
    manifest = bundle / "manifest-sha256.txt"
    manifest.write_text("nothex  data/recipe/config.toml\n" + manifest.read_text())
    with pytest.raises(InputError, match="line 1"):
        verify_bundle(bundle)


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
    assert "changed payload file: data/recipe/config.toml" in bad.stderr
    assert bad.stderr.count("\nhint: ") == 1 and "Traceback" not in bad.stderr
    as_json = run_cli("verify", str(bundle), "--json")
    report = json.loads(as_json.stdout)
    assert as_json.returncode == 1 and report["schema"] == "bundler.verify/1" and not report["ok"]
    missing = run_cli("verify", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "not a bundle" in missing.stderr
