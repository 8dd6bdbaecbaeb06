"""No secret reaches a bundle, its logs or its card: planted tokens are searched for in every byte."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bundler.bundle import bag as fmt
from bundler.bundle.scrub import REDACTED, refuse_secrets, scrub_text, scrub_tree, secret_values
from bundler.bundle.verify import verify_bundle
from bundler.errors import SecretError
from tests.conftest import git, run_cli

# Shaped like the real thing, but made up here.
HF = "hf_" + "Qx7Lm2Np9Rt4Vw8Yz3Bc6Df1Gh5Jk0Ls2"
AWS_ID = "AKIA" + "QX7LM2NP9RT4VW8Y"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + "PLANTEDAWS1"
WANDB = "b1946ac92492d2347c6235b4d2611184" + "5ea1f3c0"
INDEX_PASSWORD = "pipIndexPassw0rd" + "Planted"
GIT_TOKEN = "ghp_" + "Zy8Xw7Vu6Ts5Rq4Po3Nm2Lk1Ji0Hg9Fe8Dc"
PLANTED = [HF, AWS_ID, AWS_SECRET, WANDB, INDEX_PASSWORD, GIT_TOKEN]


@pytest.fixture
def empty_index() -> Iterator[str]:
    """A real package index on 127.0.0.1 that knows no project (pip gets 404 and moves on)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    server.shutdown()


def planted_env(index: str) -> dict[str, str]:
    return {
        "HF_TOKEN": HF,
        "HUGGING_FACE_HUB_TOKEN": HF,
        "AWS_ACCESS_KEY_ID": AWS_ID,
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "WANDB_API_KEY": WANDB,
        "PIP_EXTRA_INDEX_URL": index.replace("http://", f"http://ci-user:{INDEX_PASSWORD}@"),
    }


def assert_nowhere(blobs: dict[str, bytes]) -> None:
    leaks = [(where, secret[:6]) for where, data in blobs.items() for secret in PLANTED if secret.encode() in data]
    assert leaks == []


def test_secret_values_come_from_secret_names_shapes_and_url_credentials() -> None:
    found = secret_values(planted_env("http://127.0.0.1:1/simple") | {"HOME": "/root/somewhere", "LANG": "C.UTF-8"})
    assert {HF, AWS_ID, AWS_SECRET, WANDB, INDEX_PASSWORD} <= found
    assert "/root/somewhere" not in found and "C.UTF-8" not in found


def test_scrub_text_redacts_values_shapes_and_url_credentials() -> None:
    text = f"token={HF} key={WANDB} url=https://bob:{INDEX_PASSWORD}@pypi.example/simple {GIT_TOKEN}"
    clean = scrub_text(text, {WANDB})
    assert all(s not in clean for s in (HF, WANDB, INDEX_PASSWORD, GIT_TOKEN, "bob:"))
    assert f"https://{REDACTED}@pypi.example/simple" in clean


def test_a_recipe_holding_an_environment_secret_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = tmp_path / "b" / "data" / "recipe"
    recipe.mkdir(parents=True)
    (recipe / "notes.txt").write_text(f"wandb {WANDB}\n")  # no recognisable shape: found by value alone
    with pytest.raises(SecretError, match="notes.txt"):
        refuse_secrets(recipe, {WANDB})
    fmt.seal_bundle(tmp_path / "b")  # without the variable set, nothing marks it as a secret
    monkeypatch.setenv("WANDB_API_KEY", WANDB)
    with pytest.raises(SecretError, match="data/recipe/notes.txt"):
        fmt.seal_bundle(tmp_path / "b")


def test_run_records_are_redacted_before_they_are_hashed(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "env.json").write_text(f'{{"HF_TOKEN": "{HF}"}}\n')
    (run / "train.log").write_text(f"pip index https://u:{INDEX_PASSWORD}@host/simple\n")
    changed = scrub_tree(run, {INDEX_PASSWORD})
    assert sorted(p.name for p in changed) == ["env.json", "train.log"]
    assert_nowhere({p.name: p.read_bytes() for p in run.iterdir()})


def test_a_secret_in_a_config_value_is_a_clear_error_that_does_not_echo_it(tmp_path: Path, quickstart: Path) -> None:
    toml = quickstart / "bundle.toml"
    toml.write_text(toml.read_text().replace("[project]\n", f'[project]\nwandb_key = "{HF}"\n'))
    git(quickstart, "commit", "-qam", "oops")
    result = run_cli("build", str(quickstart), "--out", str(tmp_path / "out"), "--no-run")
    assert result.returncode == 2 and "secret" in result.stderr and "Traceback" not in result.stderr
    assert HF not in result.stderr + result.stdout
    assert not (tmp_path / "out").exists()


def test_a_committed_token_in_the_code_never_enters_the_bundle(tmp_path: Path, quickstart: Path) -> None:
    (quickstart / "settings.py").write_text(f'TOKEN = "{HF}"\n')
    git(quickstart, "add", "-A")
    git(quickstart, "commit", "-qm", "leak")
    result = run_cli("build", str(quickstart), "--out", str(tmp_path / "out"), "--no-run")
    assert result.returncode == 2 and "code.tar" in result.stderr and "settings.py" in result.stderr
    assert HF not in result.stderr + result.stdout
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_planted_secrets_reach_no_byte_of_a_built_bundle(tmp_path: Path, quickstart: Path, empty_index: str) -> None:
    git(quickstart, "remote", "add", "origin", f"https://alice:{GIT_TOKEN}@127.0.0.1:9/team/quickstart.git")
    env = planted_env(empty_index)
    out = tmp_path / "bundle"
    build = run_cli("build", str(quickstart), "--out", str(out), env=env)
    assert build.returncode == 0, build.stderr[-3000:]
    blobs = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert any(name.endswith("/env.json") for name in blobs) and any(name.endswith("README.md") for name in blobs)
    # the URL is kept, bare, outside the ID (bag-info.txt), never in the recipe
    assert b"Source-Origin: https://127.0.0.1:9/team/quickstart.git" in blobs["bag-info.txt"]
    assert b"127.0.0.1:9" not in blobs["data/recipe/source.json"]
    export = run_cli("export", str(out), "-o", str(tmp_path / "b.tar"), env=env)
    assert export.returncode == 0, export.stderr
    blobs |= {
        "stdout": build.stdout.encode(),
        "stderr": build.stderr.encode(),
        "b.tar": (tmp_path / "b.tar").read_bytes(),
    }
    assert_nowhere(blobs)
    assert verify_bundle(out).ok
