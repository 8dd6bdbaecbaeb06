"""Bundles in OCI registries, against Debian's docker-registry: the CI one on 127.0.0.1:5000, and a second
instance with htpasswd auth started here. Tampering is done where an attacker would: in its storage."""

from __future__ import annotations

import base64
import hashlib
import http.client
import http.server
import json
import secrets
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bundler.bundle.archive import export_bundle
from tests.conftest import run_cli
from tests.fixtures.bundles import make_card_bundle as make_run_bundle

pytestmark = pytest.mark.docker
STORAGE = Path("/var/lib/docker-registry/docker/registry/v2")


def unique_bundle(root: Path) -> tuple[Path, str]:
    """A bundle no other test pushes: its blobs are its own, so tampering with them harms nothing else."""
    return make_run_bundle(root, model_id=f"TinyOrg/tiny-{uuid.uuid4().hex[:12]}")


def repo() -> str:
    return f"bundler/i21-{uuid.uuid4().hex[:10]}"


def push(bundle: Path, target: str, env: dict[str, str] | None = None) -> dict:
    result = run_cli("export", str(bundle), "-o", target, "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def blob_path(digest: str) -> Path:
    hexdigest = digest.removeprefix("sha256:")
    return STORAGE / "blobs" / "sha256" / hexdigest[:2] / hexdigest / "data"


def manifest_of(registry: str, repository: str, digest: str) -> dict:
    request = urllib.request.Request(
        f"http://{registry}/v2/{repository}/manifests/{digest}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_push_prints_the_digest_and_the_same_bundle_twice_gives_the_same_digest(registry: str, tmp_path: Path) -> None:
    bundle, run_id = unique_bundle(tmp_path / "b")
    name = repo()
    first = push(bundle, f"oci://{registry}/{name}:v1")
    second = push(bundle, f"oci://{registry}/{name}:v2")
    assert first["digest"] == second["digest"]
    assert first["digest"].startswith("sha256:") and first["reference"].endswith("@" + first["digest"])
    manifest = manifest_of(registry, name, first["digest"])
    assert manifest["artifactType"] == "application/vnd.bundler.bundle.v1"
    assert manifest["annotations"]["dev.bundler.bundle-id"] == first["bundle_id"]
    assert manifest["annotations"]["dev.bundler.run-ids"] == run_id
    assert not any("created" in key for key in json.dumps(manifest).split('"'))
    kinds = {layer["mediaType"] for layer in manifest["layers"]}
    assert kinds == {
        "application/vnd.bundler.bundle.v1.tar",
        "application/vnd.cncf.model.weight.v1.raw",
        "application/vnd.cncf.model.weight.config.v1.raw",
    }
    # The tar layer is byte-identical to a local export of the same bundle.
    local = export_bundle(bundle, tmp_path / "local.tar")
    assert manifest["layers"][0]["digest"] == f"sha256:{local.sha256}"


def test_import_and_verify_by_digest_give_the_local_tar_verdict(registry: str, tmp_path: Path) -> None:
    bundle, _ = unique_bundle(tmp_path / "b")
    pushed = push(bundle, f"oci://{registry}/{repo()}")
    result = run_cli("import", pushed["reference"], "--out", str(tmp_path / "in"), "--json")
    assert result.returncode == 0, result.stderr
    imported = json.loads(result.stdout)
    assert imported["bundle_id"] == pushed["bundle_id"] and imported["source"] == pushed["reference"]
    assert run_cli("verify", str(tmp_path / "in")).returncode == 0
    verified = run_cli("verify", pushed["reference"], "--json")
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["digest"] == pushed["digest"]


def test_a_tag_alone_is_refused_with_its_digest_unless_allowed(registry: str, tmp_path: Path) -> None:
    bundle, _ = unique_bundle(tmp_path / "b")
    name = repo()
    pushed = push(bundle, f"oci://{registry}/{name}:latest-run")
    refused = run_cli("import", f"oci://{registry}/{name}:latest-run", "--out", str(tmp_path / "in"))
    assert refused.returncode == 2
    assert pushed["digest"] in refused.stderr and "--allow-tag" in refused.stderr
    assert not (tmp_path / "in").exists()
    allowed = run_cli("verify", f"oci://{registry}/{name}:latest-run", "--allow-tag")
    assert allowed.returncode == 0, allowed.stderr
    assert f"resolved to {pushed['digest']}" in allowed.stderr


def test_a_tampered_blob_fails_with_exit_1_and_leaves_nothing(registry: str, tmp_path: Path) -> None:
    bundle, _ = unique_bundle(tmp_path / "b")
    pushed = push(bundle, f"oci://{registry}/{repo()}")
    manifest = manifest_of(registry, pushed["reference"].split("/", 3)[3].split("@")[0], pushed["digest"])
    stored = blob_path(manifest["layers"][0]["digest"])
    data = bytearray(stored.read_bytes())
    data[1000] ^= 0x01  # same size: only the content changes, as a tampering attacker would do it
    stored.write_bytes(bytes(data))
    result = run_cli("import", pushed["reference"], "--out", str(tmp_path / "in"))
    assert result.returncode == 1
    assert manifest["layers"][0]["digest"][:19] in result.stderr and "hashes to" in result.stderr
    assert not (tmp_path / "in").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bundler-oci-")]
    assert run_cli("verify", pushed["reference"]).returncode == 1


def test_a_tampered_manifest_fails_with_exit_1(registry: str, tmp_path: Path) -> None:
    bundle, _ = unique_bundle(tmp_path / "b")
    pushed = push(bundle, f"oci://{registry}/{repo()}")
    stored = blob_path(pushed["digest"])
    original = stored.read_bytes()
    stored.write_bytes(original.replace(b'"bundler/1"', b'"bundler/9"'))
    assert stored.read_bytes() != original
    result = run_cli("verify", pushed["reference"])
    assert result.returncode == 1
    assert "hashes to" in result.stderr


def test_a_missing_blob_is_the_registrys_error_with_exit_2(registry: str, tmp_path: Path) -> None:
    bundle, _ = unique_bundle(tmp_path / "b")
    name = repo()
    pushed = push(bundle, f"oci://{registry}/{name}")
    layer = manifest_of(registry, name, pushed["digest"])["layers"][1]["digest"]
    connection = http.client.HTTPConnection(registry, timeout=10)
    connection.request("DELETE", f"/v2/{name}/blobs/{layer}")
    assert connection.getresponse().status == 202
    result = run_cli("import", pushed["reference"], "--out", str(tmp_path / "in"))
    assert result.returncode == 2
    assert "HTTP 404" in result.stderr and "BLOB_UNKNOWN" in result.stderr
    assert not (tmp_path / "in").exists()


def test_an_artifact_that_is_not_a_bundle_is_refused(registry: str, tmp_path: Path) -> None:
    import oras.provider

    name = repo()
    (tmp_path / "notes.txt").write_text("not a bundle\n")
    client = oras.provider.Registry(hostname=registry, insecure=True)
    client.push(target=f"{registry}/{name}:v1", files=[str(tmp_path / "notes.txt")], disable_path_validation=True)
    digest = "sha256:" + hashlib.sha256(
        urllib.request.urlopen(
            urllib.request.Request(
                f"http://{registry}/v2/{name}/manifests/v1",
                headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
            ),
            timeout=10,
        ).read()
    ).hexdigest()
    result = run_cli("import", f"oci://{registry}/{name}@{digest}", "--out", str(tmp_path / "in"))
    assert result.returncode == 2
    assert "not a bundle" in result.stderr and "application/vnd.bundler.bundle.v1" in result.stderr
    assert not (tmp_path / "in").exists()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_registry_exits_2_with_the_connection_error(tmp_path: Path) -> None:
    target = f"oci://127.0.0.1:{free_port()}/bundler/x@sha256:{'0' * 64}"
    result = run_cli("import", target, "--out", str(tmp_path / "in"))
    assert result.returncode == 2
    assert "Connection refused" in result.stderr and "hint:" in result.stderr
    assert not (tmp_path / "in").exists()


class FlakyProxy:
    """A loopback proxy in front of the real registry that answers 500 to the first `failures` blob GETs."""

    def __init__(self, upstream: str, failures: int):
        self.upstream, self.failures, self.failed = upstream, failures, 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                if self.command == "GET" and "/blobs/" in self.path and proxy.failed < proxy.failures:
                    proxy.failed += 1
                    body = b'{"errors":[{"code":"UNKNOWN","message":"injected failure"}]}'
                    self.send_response(500)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                upstream = http.client.HTTPConnection(proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = _forward  # noqa: N815

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FlakyProxy:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_registry_answering_500_then_200_is_retried(registry: str, tmp_path: Path) -> None:
    bundle, _ = unique_bundle(tmp_path / "b")
    name = repo()
    pushed = push(bundle, f"oci://{registry}/{name}")
    with FlakyProxy(registry, failures=1) as proxy:
        result = run_cli("import", f"oci://{proxy.address}/{name}@{pushed['digest']}", "--out", str(tmp_path / "in"))
        assert proxy.failed == 1
    assert result.returncode == 0, result.stderr
    assert run_cli("verify", str(tmp_path / "in")).returncode == 0


@pytest.fixture
def auth_registry(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """A second docker-registry requiring htpasswd auth, with its own storage; yields (host, user, password)."""
    import bcrypt

    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.skip("Debian's docker-registry is not installed")
    user, password = "auditor", secrets.token_urlsafe(16)
    root = tmp_path / "auth-registry"
    root.mkdir()
    (root / "htpasswd").write_bytes(f"{user}:".encode() + bcrypt.hashpw(password.encode(), bcrypt.gensalt(5)) + b"\n")
    port = free_port()
    (root / "config.yml").write_text(
        "version: 0.1\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'storage'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        f"auth:\n  htpasswd:\n    realm: bundler-test\n    path: {root / 'htpasswd'}\n"
    )
    process = subprocess.Popen([binary, "serve", str(root / "config.yml")], stdout=subprocess.DEVNULL,
                               stderr=open(root / "log", "wb"))  # fmt: skip
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
            except urllib.error.HTTPError as exc:
                if exc.code == 401:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail(f"the auth registry did not start: {(root / 'log').read_text()[-500:]}")
        yield f"127.0.0.1:{port}", user, password
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_registry_that_needs_auth_refuses_without_credentials(
    auth_registry: tuple[str, str, str], tmp_path: Path
) -> None:
    host, _, _ = auth_registry
    bundle, _ = unique_bundle(tmp_path / "b")
    result = run_cli("export", str(bundle), "-o", f"oci://{host}/bundler/private", env={"DOCKER_CONFIG": str(tmp_path)})
    assert result.returncode == 2
    assert "HTTP 401" in result.stderr and 'realm="bundler-test"' in result.stderr  # the registry's own words
    assert "BUNDLER_REGISTRY_USERNAME" in result.stderr


def test_credentials_from_the_environment_or_docker_config_are_used_and_never_written(
    auth_registry: tuple[str, str, str], tmp_path: Path
) -> None:
    host, user, password = auth_registry
    bundle, _ = unique_bundle(tmp_path / "b")
    env = {"BUNDLER_REGISTRY_USERNAME": user, "BUNDLER_REGISTRY_PASSWORD": password}
    pushed = push(bundle, f"oci://{host}/bundler/private", env=env)
    docker_config = tmp_path / "docker"
    docker_config.mkdir()
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    (docker_config / "config.json").write_text(json.dumps({"auths": {host: {"auth": token}}}))
    env = {"DOCKER_CONFIG": str(docker_config)}
    result = run_cli("import", pushed["reference"], "--out", str(tmp_path / "in"), env=env)
    assert result.returncode == 0, result.stderr
    for path in [*bundle.rglob("*"), *(tmp_path / "in").rglob("*")]:
        if path.is_file():
            data = path.read_bytes()
            assert password.encode() not in data and token.encode() not in data, path
    assert password not in result.stdout + result.stderr
