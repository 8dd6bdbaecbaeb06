"""Base-image catalog and tag -> digest resolution against a real HTTP server speaking the registry API."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bundler.errors import InputError, UnknownImageError
from bundler.recipe.config import EnvironmentConfig
from bundler.recipe.images import (
    find_image,
    image_lock_record,
    load_catalog,
    parse_reference,
    resolve_digest,
)

AMD64 = "sha256:" + "a" * 64
ARM64 = "sha256:" + "b" * 64
INDEX = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"digest": ARM64, "platform": {"os": "linux", "architecture": "arm64"}},
            {"digest": AMD64, "platform": {"os": "linux", "architecture": "amd64"}},
        ],
    }
).encode()


@pytest.fixture
def fake_registry() -> Iterator[str]:
    """A registry on 127.0.0.1 serving one multi-arch tag, `cuda/runtime:12.8`."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/v2/cuda/runtime/manifests/12.8":
                self.send_response(200)
                self.send_header("Content-Type", "application/vnd.oci.image.index.v1+json")
                self.send_header("Docker-Content-Digest", "sha256:" + hashlib.sha256(INDEX).hexdigest())
                self.end_headers()
                self.wfile.write(INDEX)
            else:
                self.send_response(404)
                self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_catalog_holds_two_cuda_runtime_images_with_python_and_the_local_test_image() -> None:
    catalog = load_catalog()
    cuda = [e for e in catalog.values() if e.cuda != "none"]
    assert len(cuda) >= 2
    assert all(e.python and e.torch_index.endswith("cu" + e.cuda.replace(".", "")) for e in cuda)
    assert all(e.min_driver[0].isdigit() for e in cuda)
    local = catalog["debian-python-3.11"]
    assert (local.reference, local.cuda, local.torch_index) == (
        "127.0.0.1:5000/bundler/debian-python:3.11",
        "none",
        "https://download.pytorch.org/whl/cpu",
    )


def test_unknown_catalog_name_suggests_the_nearest() -> None:
    with pytest.raises(UnknownImageError) as caught:
        find_image("cuda12.8-py3.1")
    assert caught.value.exit_code == 2
    assert "cuda12.8-py3.11" in caught.value.hint


def test_references_are_parsed_like_the_docker_cli() -> None:
    assert str(parse_reference("ubuntu")) == "docker.io/library/ubuntu:latest"
    assert str(parse_reference("127.0.0.1:5000/a/b:3.11")) == "127.0.0.1:5000/a/b:3.11"
    with pytest.raises(InputError):
        parse_reference("UPPER/case:tag")


def test_manifest_list_digest_and_amd64_manifest_digest_are_both_returned(
    fake_registry: str,
) -> None:
    digests = resolve_digest(f"{fake_registry}/cuda/runtime:12.8")
    assert digests == {
        "index_digest": "sha256:" + hashlib.sha256(INDEX).hexdigest(),
        "manifest_digest": AMD64,
    }


def test_a_tag_the_registry_does_not_know_is_bad_input(fake_registry: str) -> None:
    with pytest.raises(UnknownImageError) as caught:
        resolve_digest(f"{fake_registry}/cuda/runtime:99")
    assert caught.value.exit_code == 2


def write_entry(folder: Path, digest: str | None, reference: str = "127.0.0.1:9/x/y:1") -> Path:
    folder.mkdir(exist_ok=True)
    line = f'digest = "{digest}"\n' if digest else ""
    (folder / "img.toml").write_text(
        f'reference = "{reference}"\n{line}cuda = "none"\npython = "3.11"\n'
        'torch_index = "https://download.pytorch.org/whl/cpu"\nmin_driver = "none"\n'
    )
    return folder


def test_offline_uses_the_catalog_digest_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    catalog = write_entry(tmp_path / "images", AMD64)
    record = image_lock_record(EnvironmentConfig(image="img"), offline=True, directory=catalog)
    assert (record["digest"], record["digest_source"]) == (AMD64, "catalog")
    assert "catalog digest" in " ".join(capsys.readouterr().err.split())  # rich wraps long lines


def test_unreachable_registry_without_a_catalog_digest_is_bad_input(tmp_path: Path) -> None:
    catalog = write_entry(tmp_path / "images", None)
    with pytest.raises(InputError) as caught:
        image_lock_record(EnvironmentConfig(image="img"), offline=False, directory=catalog)
    assert "records no digest" in str(caught.value)
