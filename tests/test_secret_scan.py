"""Committed secrets of every kind are refused, whatever the file's name or size; the dataset is scanned too.

Every token here is generated at run time (random characters in the documented shape), so nothing
real-looking is committed to this repository.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Callable
from pathlib import Path

import pytest

from bundler.bundle.scrub import REDACTED, SecretScanner, refuse_secrets, scan_tar, scrub_text
from bundler.errors import SecretError
from bundler.recipe.source import describe_source
from tests.conftest import git, run_cli

ALNUM = string.ascii_letters + string.digits
HEX = "0123456789abcdef"


def rand(n: int, alphabet: str = ALNUM) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def pem(kind: str) -> str:
    body = "\n".join(rand(64, ALNUM + "+/") for _ in range(4))
    return f"-----BEGIN {kind}PRIVATE KEY-----\n{body}\n-----END {kind}PRIVATE KEY-----\n"


def notebook(token: str) -> str:
    cell = {
        "cell_type": "code",
        "execution_count": 1,
        "metadata": {},
        "source": ["import os\n", "print(os.environ['HF_TOKEN'])"],
        "outputs": [{"name": "stdout", "output_type": "stream", "text": [token + "\n"]}],
    }
    return json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}, indent=1)


# (file name, its content around a generated token, the kind the refusal names)
CASES: dict[str, tuple[str, Callable[[], str], str]] = {
    "notebook output": ("train.ipynb", lambda: notebook("hf_" + rand(34)), "Hugging Face token"),
    "env file by another name": ("deploy.env", lambda: f"DEBUG=1\nAPI_KEY={rand(24)}\n", "API_KEY in an env file"),
    "GitHub token in JavaScript": ("app.js", lambda: f"const token = 'ghp_{rand(36)}';\n", "GitHub token"),
    "PEM key": ("signing.key", lambda: pem("RSA "), "private key"),
    "OpenSSH key": ("deploy/id_ed25519", lambda: pem("OPENSSH "), "private key"),
    "GCP service account": (
        "sa.json",
        lambda: json.dumps({"type": "service_account", "private_key_id": rand(40, HEX), "project_id": "p"}),
        "GCP service-account key",
    ),
    "AWS key pair": (
        "credentials",
        lambda: f"[default]\naws_access_key_id = AKIA{rand(16, string.ascii_uppercase + string.digits)}\n",
        "AWS access key",
    ),
    "AWS secret": ("aws.cfg", lambda: f"aws_secret_access_key = {rand(40)}\n", "AWS secret key"),
    "GitLab token": (".gitlab-ci.yml", lambda: f"variables:\n  TOKEN: glpat-{rand(20)}\n", "GitLab token"),
    "Slack token": ("notify.py", lambda: f"SLACK = 'xoxb-{rand(12, string.digits)}-{rand(24)}'\n", "Slack token"),
    "W&B netrc": ("netrc", lambda: f"machine api.wandb.ai\n  login user\n  password {rand(40, HEX)}\n", "W&B API key"),
    "W&B login": ("log.py", lambda: f"wandb.login(key='{rand(40, HEX)}')", "W&B API key"),
    "OpenAI key": ("chat.py", lambda: f"client = OpenAI(api_key='sk-proj-{rand(48)}')\n", "OpenAI/W&B-style key"),
    "a token in a binary file": ("logo.png", lambda: "\x89PNG\r\n\x1a\n\0hf_" + rand(34) + "\0", "Hugging Face token"),
}


def committed_repo(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "code")
    return root


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_committed_secret_is_found_in_the_commit_archive(tmp_path: Path, case: str) -> None:
    name, make, kind = CASES[case]
    content = make()
    repo = committed_repo(tmp_path / "repo", {"README.md": "# project\n", name: content})
    archive = tmp_path / "code.tar"
    describe_source(repo, allow_dirty=False, archive_to=archive)
    found = scan_tar(archive, "data/recipe/code.tar", ())
    assert found, f"{case} not found"
    assert kind in found[0].kind and found[0].path.endswith(name)


def test_ordinary_code_is_not_a_secret(tmp_path: Path) -> None:
    code = (
        "import os\ntoken = os.environ['HF_TOKEN']  # read at use\n"
        "url = 'https://huggingface.co/api/models/org/name'\nmask_hf_" + rand(34) + " = 1\n"
        "task-sk-learn = 'disk-sk'\nAPI_KEY = os.environ.get('API_KEY')\n"
    )
    env = "API_KEY=${API_KEY}\nDEBUG=1\nTOKEN=\n"
    repo = committed_repo(tmp_path / "repo", {"train.py": code, ".env.example": env})
    archive = tmp_path / "code.tar"
    describe_source(repo, allow_dirty=False, archive_to=archive)
    assert scan_tar(archive, "code.tar", ()) == []


def test_a_committed_notebook_token_stops_the_build_without_echoing_it(tmp_path: Path, quickstart: Path) -> None:
    token = "hf_" + rand(34)
    (quickstart / "explore.ipynb").write_text(notebook(token), encoding="utf-8")
    git(quickstart, "add", "-A")
    git(quickstart, "commit", "-qm", "notebook")
    out = tmp_path / "b"
    result = run_cli("build", str(quickstart), "--out", str(out), "--no-run")
    assert result.returncode == 2, result.stderr
    assert "data/recipe/code.tar:explore.ipynb line" in result.stderr and "Hugging Face token" in result.stderr
    assert token not in result.stderr + result.stdout
    assert "splitting" not in result.stderr  # refused before any split or model work
    assert not out.exists()


def test_a_file_larger_than_any_old_cut_off_is_scanned_to_its_end(tmp_path: Path) -> None:
    folder = tmp_path / "recipe"
    folder.mkdir()
    big = folder / "weights.bin"
    with big.open("wb") as handle:
        handle.truncate(300 * 1024 * 1024)  # sparse: 300 MiB of zeros, past the old 256 MiB limit
        handle.seek(0, 2)
        handle.write(b"\ngithub_pat_" + rand(50).encode() + b"\n")
    expected = r"weights.bin line 2 \(byte 314572801\) looks like a secret \(GitHub token\)"
    with pytest.raises(SecretError, match=expected):
        refuse_secrets(folder, values=())


def test_a_token_split_across_chunks_is_found() -> None:
    import io

    token = ("ghp_" + rand(36)).encode()
    for pad in range((1 << 20) - 40, (1 << 20) + 5, 7):
        data = b" " * pad + token + b"\n"  # a space: the token starts on a word boundary
        found = SecretScanner().scan(io.BytesIO(data), "f")
        assert found and found[0].offset == pad, pad


def test_run_records_are_still_redacted_with_the_new_shapes() -> None:
    token = "glpat-" + rand(20)
    assert scrub_text(f"push with {token} done") == f"push with {REDACTED} done"


def _plant_in_dataset(project: Path, token: str) -> None:
    data = project / "data" / "reviews.jsonl"
    rows = data.read_text(encoding="utf-8").splitlines()
    row = json.loads(rows[6])
    row["response"] = f"{row['response']} (debug: {token})"
    rows[6] = json.dumps(row)
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    git(project, "commit", "-qam", "a row with a token")


def test_a_token_in_the_dataset_is_refused_unless_allowed_and_then_named(tmp_path: Path, quickstart: Path) -> None:
    token = "ghp_" + rand(36)
    _plant_in_dataset(quickstart, token)
    refused = run_cli("build", str(quickstart), "--out", str(tmp_path / "a"), "--no-run")
    assert refused.returncode == 2, refused.stderr
    assert "reviews.jsonl line 7" in refused.stderr and "GitHub token" in refused.stderr
    assert "--allow-secrets-in-data" in refused.stderr and token not in refused.stderr
    assert not (tmp_path / "a").exists()


def test_data_outside_the_repo_with_a_token_is_refused(tmp_path: Path, quickstart: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    token = "hf_" + rand(34)
    rows = (quickstart / "data" / "reviews.jsonl").read_text().splitlines()
    rows[2] = rows[2].replace('"prompt": "', f'"prompt": "{token} ', 1)
    (shared / "reviews.jsonl").write_text("\n".join(rows) + "\n")
    config = quickstart / "bundle.toml"
    config.write_text(config.read_text().replace('"data/reviews.jsonl"', f'"{shared / "reviews.jsonl"}"'))
    git(quickstart, "commit", "-qam", "shared data")
    result = run_cli("build", str(quickstart), "--out", str(tmp_path / "b"), "--no-run")
    assert result.returncode == 2 and "reviews.jsonl line 3" in result.stderr and "Hugging Face token" in result.stderr


@pytest.mark.slow
def test_allowed_dataset_secrets_are_named_in_the_build_output(tmp_path: Path, quickstart: Path) -> None:
    token = "ghp_" + rand(36)
    _plant_in_dataset(quickstart, token)
    out = tmp_path / "b"
    allowed = run_cli("build", str(quickstart), "--out", str(out), "--no-run", "--allow-secrets-in-data")
    assert allowed.returncode == 0, allowed.stderr
    said = " ".join(allowed.stderr.split())  # the console wraps long warnings
    assert "allowed by --allow-secrets-in-data" in said and "reviews.jsonl line 7 (byte 1304): GitHub token" in said
    assert token not in allowed.stderr
    assert token in (out / "data" / "vendor" / "dataset" / "reviews.jsonl").read_text()
