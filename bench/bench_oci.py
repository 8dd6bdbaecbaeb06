"""OCI registry throughput: `bundler export -o oci://` and `bundler import oci://...@sha256:` against
`docker push` / `docker pull` of an image layer of the same size, same registry, same run.

    python bench/bench_oci.py [--mib 256] [--repeat 3] [--registry 127.0.0.1:5000]

Each repeat uses fresh random bytes, so no blob is already in the registry (no dedupe on either side).
bundler's pushed bytes are the export tar plus the adapter again as its own layer (about 2x the adapter);
docker's layer is a tar holding one random file of that same total size. bundler's pull includes every
check it makes (manifest and blob digests while streaming, the archive checks, extraction, verify);
docker's pull includes its own digest checks and the layer's extraction into its storage.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DOCKER = "/usr/bin/docker"


def make_bundle(root: Path, adapter_bytes: int) -> Path:
    """A sealed bundle with one run whose adapter holds `adapter_bytes` random bytes."""
    from bundler.bundle import bag

    bundle = root / "bundle"
    recipe = bundle / "data" / "recipe"
    recipe.mkdir(parents=True)
    (recipe / "config.toml").write_text(f'# bench {uuid.uuid4().hex}\n[model]\nid = "bench/model"\n')
    bag.seal_bundle(bundle)
    staged = root / "staged"
    (staged / "adapter").mkdir(parents=True)
    with open(staged / "adapter" / "adapter_model.safetensors", "wb") as handle:
        for _ in range(adapter_bytes // (1 << 20)):
            handle.write(os.urandom(1 << 20))
    (staged / "adapter" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (staged / "results.json").write_text("{}")
    bag.add_run(bundle, staged)
    return bundle


def layer_image(root: Path, size: int, registry: str) -> str:
    """Import a one-layer image holding `size` random bytes and tag it for the registry."""
    payload = root / "payload.bin"
    with open(payload, "wb") as handle:
        for _ in range(size // (1 << 20)):
            handle.write(os.urandom(1 << 20))
        handle.write(os.urandom(size % (1 << 20)))
    archive = root / "layer.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(payload, arcname="payload.bin")
    tag = f"{registry}/bench/docker-layer-{uuid.uuid4().hex[:10]}:1"
    subprocess.run([DOCKER, "import", str(archive), tag], check=True, capture_output=True)
    return tag


def docker(*args: str) -> float:
    """Run the docker CLI; return its wall time."""
    started = time.perf_counter()
    subprocess.run([DOCKER, *args], check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=256, help="adapter size in MiB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--registry", default="127.0.0.1:5000")
    args = parser.parse_args()

    from bundler.bundle.archive import ImportLimits
    from bundler.oci.fetch import import_from_registry
    from bundler.oci.push import push_bundle

    rows: dict[str, list[float]] = {"bundler push": [], "bundler pull": [], "docker push": [], "docker pull": []}
    pushed_bytes = 0
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="bench-oci-") as tmp:
            work = Path(tmp)
            bundle = make_bundle(work, args.mib << 20)
            target = f"oci://{args.registry}/bench/bundle-{uuid.uuid4().hex[:10]}"
            started = time.perf_counter()
            pushed = push_bundle(bundle, target)
            rows["bundler push"].append(time.perf_counter() - started)
            pushed_bytes = pushed.bytes
            started = time.perf_counter()
            import_from_registry(pushed.reference, work / "imported", ImportLimits(), allow_tag=False)
            rows["bundler pull"].append(time.perf_counter() - started)
            shutil.rmtree(work / "imported")
            tag = layer_image(work, pushed_bytes, args.registry)
            rows["docker push"].append(docker("push", "-q", tag))
            digest = subprocess.run(
                [DOCKER, "inspect", "--format", "{{index .RepoDigests 0}}", tag],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            docker("rmi", "-f", tag, digest)
            rows["docker pull"].append(docker("pull", "-q", digest))
            docker("rmi", "-f", digest)

    mib = pushed_bytes / (1 << 20)
    print(f"{mib:.0f} MiB per transfer, median of {args.repeat}, registry {args.registry}")
    print(f"{'operation':<14} {'median s':>9} {'MiB/s':>8} {'x docker':>9}")
    for name, times in rows.items():
        median = statistics.median(times)
        baseline = statistics.median(rows[name.replace("bundler", "docker")])
        print(f"{name:<14} {median:>9.2f} {mib / median:>8.1f} {median / baseline:>9.2f}")


if __name__ == "__main__":
    main()
