"""`bundler run --emit kubernetes` and `bundler record`: the cluster round trip.

The manifests are validated against the published schemas vendored in tests/fixtures/k8s/ (SOURCES.md:
the Kubeflow Training Operator v1.9.0 PyTorchJob CRD, Kubernetes v1.31.0 strict JSON schemas) with the
jsonschema library. No cluster runs here: the Indexed Job's pods are played on this machine instead, each a
process started with the container's own command, arguments and environment from the manifest (paths
and the rendezvous host swapped for local ones, gloo on the CPU), and what rank 0 wrote is recorded.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from bundler.bundle.bag import seal_bundle
from tests.conftest import run_cli
from tests.fixtures.runtime_recipe import make_recipe

FIXTURES = Path(__file__).parent / "fixtures" / "k8s"
DIGEST = "sha256:" + "ab" * 32
IMAGE = f"registry.example.invalid/bundler/bundle@{DIGEST}"
VOLUMES = ["--model-uri", "pvc:models/tiny", "--data-uri", "hostpath:/srv/data", "--output-uri", "pvc:runs/r1"]
LOCKED = ("torch", "transformers", "peft", "accelerate", "safetensors", "numpy", "tokenizers")


# --- the schemas ---


def _strict(node: Any) -> Any:
    """What `kubectl apply --validate=strict` refuses: unknown fields where the CRD lists the known ones."""
    if isinstance(node, dict):
        node = {k: _strict(v) for k, v in node.items()}
        if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            node.setdefault("additionalProperties", False)
        return node
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


def crd_validator() -> jsonschema.protocols.Validator:
    schema = _strict(json.loads((FIXTURES / "pytorchjob-v1.schema.json").read_text()))
    return jsonschema.Draft7Validator(schema)


def k8s_validator(kind: str) -> jsonschema.protocols.Validator:
    published = json.loads((FIXTURES / "k8s-v1.31.0-strict.schema.json").read_text())
    return jsonschema.Draft202012Validator({"$defs": published["$defs"], **published["kinds"][kind]})


def schema_errors(document: dict[str, Any]) -> list[str]:
    validator = crd_validator() if document["kind"] == "PyTorchJob" else k8s_validator(document["kind"])
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


# --- a real bundle around the tests' recipe ---


def make_recipe_bundle(root: Path) -> Path:
    """A sealed bundle whose recipe is the tests' (tiny model, runtime copied in), locked to this interpreter."""
    paths = make_recipe(root / "src", config_overrides={"train": {"max_steps": 4, "eval_every": 4, "batch_size": 8}})
    bundle = root / "bundle"
    shutil.copytree(paths["recipe"], bundle / "data" / "recipe", ignore=shutil.ignore_patterns("__pycache__"))
    lock = "".join(f"{name}=={metadata.version(name)}\n" for name in LOCKED)
    (bundle / "data" / "recipe" / "requirements.lock").write_text("# test lock: this interpreter's versions\n" + lock)
    shutil.copytree(paths["data"], bundle / "data" / "vendor" / "dataset")
    shutil.copytree(paths["model"], bundle / "data" / "vendor" / "model")
    (bundle / "bagit.txt").write_text("BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n")
    (bundle / "bag-info.txt").write_text("Bundle-Format: bundler/1\n")
    seal_bundle(bundle)
    return bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_recipe_bundle(tmp_path_factory.mktemp("k8s"))


def emit(bundle: Path, out: Path, *extra: str) -> Any:
    return run_cli("run", str(bundle), "--emit", "kubernetes", "--image", IMAGE, *VOLUMES,
                   "--out-manifests", str(out), "--json", *extra)  # fmt: skip


def documents(path: Path) -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(path.read_text()) if doc}


@pytest.fixture(scope="module")
def manifests(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("manifests")
    done = emit(bundle, out, "--nodes", "2", "--gpus-per-node", "4")
    assert done.returncode == 0, done.stderr
    return {form: Path(path) for form, path in json.loads(done.stdout)["manifests"].items()}


# --- emit ---


def test_pytorchjob_is_valid_against_the_training_operator_crd(manifests: dict[str, Path]) -> None:
    docs = documents(manifests["pytorchjob"])
    assert set(docs) == {"PyTorchJob", "NetworkPolicy"}
    assert schema_errors(docs["PyTorchJob"]) == []
    assert schema_errors(docs["NetworkPolicy"]) == []
    spec = docs["PyTorchJob"]["spec"]
    assert spec["nprocPerNode"] == "4"
    assert {k: v["replicas"] for k, v in spec["pytorchReplicaSpecs"].items()} == {"Master": 1, "Worker": 1}


def test_indexed_job_and_headless_service_are_valid_against_kubernetes_1_31(manifests: dict[str, Path]) -> None:
    docs = documents(manifests["indexed-job"])
    assert set(docs) == {"Job", "Service", "NetworkPolicy"}
    for document in docs.values():
        assert schema_errors(document) == [], document["kind"]
    job, service = docs["Job"]["spec"], docs["Service"]["spec"]
    assert (job["completionMode"], job["completions"], job["parallelism"]) == ("Indexed", 2, 2)
    assert (
        service["clusterIP"] == "None" and job["template"]["spec"]["subdomain"] == docs["Service"]["metadata"]["name"]
    )


def test_the_schemas_refuse_what_a_cluster_would() -> None:
    """Controls: the validators are strict enough to catch an unknown field and a wrong type."""
    job = {"apiVersion": "batch/v1", "kind": "Job", "spec": {"completions": "two", "template": {}}}
    assert any("completions" in e for e in schema_errors(job))
    pytorch = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "spec": {"pytorchReplicaSpecs": {}, "nproc": 1}}
    assert any("nproc" in e for e in schema_errors(pytorch))


def _container(document: dict[str, Any]) -> dict[str, Any]:
    template = (
        document["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
        if document["kind"] == "PyTorchJob"
        else document["spec"]["template"]
    )
    (container,) = template["spec"]["containers"]
    return {**container, "pod": template["spec"]}


def test_every_pod_carries_the_runtime_contract(manifests: dict[str, Path]) -> None:
    from bundler.runners.launch import DETERMINISM_ENV

    for form, kind in (("pytorchjob", "PyTorchJob"), ("indexed-job", "Job")):
        container = _container(documents(manifests[form])[kind])
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert {k: env[k] for k in DETERMINISM_ENV} == DETERMINISM_ENV
        assert env["NCCL_NVLS_ENABLE"] == "0" and env["TORCH_SYMM_MEM_DISABLE_MULTICAST"] == "1"
        assert "NCCL_SOCKET_IFNAME" not in env and "GLOO_SOCKET_IFNAME" not in env  # loopback is single-host only
        assert env["BUNDLER_IMAGE_DIGEST"] == DIGEST and container["image"] == IMAGE
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts["/mnt/model"]["readOnly"] and mounts["/mnt/data"]["readOnly"] and not mounts["/out"]["readOnly"]
        assert mounts["/mnt/model"]["subPath"] == "tiny"
        volumes = {v["name"]: v for v in container["pod"]["volumes"]}
        assert volumes["out"]["persistentVolumeClaim"] == {"claimName": "runs", "readOnly": False}
        assert volumes["data"]["hostPath"]["path"] == "/srv/data"
        assert container["pod"]["securityContext"]["runAsNonRoot"] and container["pod"]["securityContext"]["runAsUser"]
        assert container["securityContext"]["readOnlyRootFilesystem"]
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_network_policy_admits_only_the_jobs_own_pods_and_dns(manifests: dict[str, Path]) -> None:
    policy = documents(manifests["pytorchjob"])["NetworkPolicy"]["spec"]
    own = policy["podSelector"]
    assert policy["ingress"] == [{"from": [{"podSelector": own}]}]
    egress_ports = [p["port"] for rule in policy["egress"] for p in rule.get("ports", [])]
    assert set(egress_ports) == {53}


def test_manifests_are_deterministic_sorted_and_carry_no_time(
    bundle: Path, manifests: dict[str, Path], tmp_path: Path
) -> None:
    again = emit(bundle, tmp_path / "again", "--nodes", "2", "--gpus-per-node", "4")
    assert again.returncode == 0, again.stderr
    for form, path in manifests.items():
        text = path.read_text()
        assert (tmp_path / "again" / path.name).read_text() == text, form
        assert text.startswith("# Generated by `bundler run BUNDLE --emit kubernetes`")
        assert "2026" not in text and "creationTimestamp" not in text and "&id" not in text
        for doc in yaml.safe_load_all(text):
            assert yaml.safe_dump(doc, sort_keys=True) == yaml.safe_dump(doc, sort_keys=False)


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (["--image", "registry.example.invalid/bundler/bundle:latest"], "not pinned by digest"),
        (["--output-uri", ""], "--output-uri"),
        (["--output-uri", "s3://bucket/run"], "names no volume"),
        (["--nodes", "3"], "does not split evenly"),
    ],
)
def test_bad_emit_options_exit_2_with_the_next_step(bundle: Path, tmp_path: Path, change: list[str], said: str) -> None:
    done = emit(bundle, tmp_path / "m", *change)
    assert done.returncode == 2, done.stderr
    assert said in done.stderr and "hint:" in done.stderr and "internal error" not in done.stderr
    assert not (tmp_path / "m").exists()


def test_emitting_imports_no_torch(bundle: Path, tmp_path: Path) -> None:
    argv = [
        "run",
        str(bundle),
        "--emit",
        "kubernetes",
        "--image",
        IMAGE,
        *VOLUMES,
        "--out-manifests",
        str(tmp_path / "m"),
    ]
    code = (
        "import sys\nfrom bundler.cli import main\n"
        f"try:\n    main({argv!r})\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"}
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "m" / "pytorchjob.yaml").is_file()


# --- the round trip: the Indexed Job's pods played locally, then `bundler record` ---


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def play_pods(bundle: Path, job: dict[str, Any], out: Path) -> None:
    """Start every pod of the Indexed Job as a local process with the container's command, args and env."""
    container, nodes = _container(job), job["spec"]["completions"]
    port, recipe = str(_free_port()), str(bundle / "data" / "recipe")
    local = {"/bundle/recipe": recipe, "/out": str(out), "23456": port, "/mnt/model": str(bundle / "data/vendor/model"),
             "/mnt/data": str(bundle / "data/vendor/dataset")}  # fmt: skip
    processes = []
    for index in range(nodes):
        env = {"PATH": os.environ["PATH"], "HOME": str(out.parent), "PYTHONPATH": recipe, "GLOO_SOCKET_IFNAME": "lo"}
        for item in container["env"]:
            value = str(index) if "valueFrom" in item else item["value"]  # the completion index fieldRef
            env[item["name"]] = local.get(value, value)
        env["PET_MASTER_ADDR"] = "127.0.0.1"  # <job>-0.<service> on a cluster
        args = [local.get(a, a) for a in container["args"]]
        argv = [
            sys.executable if container["command"][0] == "python" else container["command"][0],
            *container["command"][1:],
            *args,
        ]
        target = out if index == 0 else out.parent / f"pod{index}-out"  # each pod its own volume here
        argv[-1] = str(target)
        processes.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for process in processes:
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output[-4000:]


@pytest.fixture(scope="module")
def cluster_run(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Outputs of a 2-node x 1-GPU Indexed Job, its pods played on this machine (gloo, CPU)."""
    root = tmp_path_factory.mktemp("cluster")
    done = emit(bundle, root / "manifests", "--nodes", "2", "--gpus-per-node", "1")
    assert done.returncode == 0, done.stderr
    job = copy.deepcopy(documents(root / "manifests" / "indexed-job.yaml")["Job"])
    play_pods(bundle, job, root / "out")
    return root / "out"


def _copy_bundle(bundle: Path, target: Path) -> Path:
    shutil.copytree(bundle, target)
    return target


@pytest.mark.slow
def test_a_cluster_run_comes_back_as_a_recorded_run_with_its_card(
    bundle: Path, cluster_run: Path, tmp_path: Path
) -> None:
    target = _copy_bundle(bundle, tmp_path / "bundle")
    env = json.loads((cluster_run / "env.json").read_text())
    assert env["runner"] == "kubernetes" and env["image_digest"] == DIGEST
    assert (env["distributed"]["world_size"], env["distributed"]["nodes"]) == (2, 2)
    done = run_cli("record", str(target), str(cluster_run), "--world-size", "2", "--json")
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    run_dir = target / "data" / "runs" / run_id
    assert (run_dir / "adapter" / "adapter_model.safetensors").read_bytes() == (
        cluster_run / "adapter" / "adapter_model.safetensors"
    ).read_bytes()
    assert json.loads((run_dir / "run.json").read_text())["recorded_by"] == "bundler record"
    assert "world size 2 (2 node(s) x 1 rank(s)), gloo" in (run_dir / "README.md").read_text()
    assert run_cli("verify", str(target)).returncode == 0


def _tampered(cluster_run: Path, tmp_path: Path, change: Any) -> Path:
    out = tmp_path / "outputs"
    shutil.copytree(cluster_run, out)
    change(out)
    return out


def _edit_json(path: Path, **fields: Any) -> None:
    record = json.loads(path.read_text())
    for key, value in fields.items():
        section, _, name = key.partition("__")
        if name:
            record[section][name] = value
        else:
            record[key] = value
    path.write_text(json.dumps(record))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "said"),
    [
        (lambda o: (o / "adapter/adapter_model.safetensors").write_bytes(b"other"), "adapter_model.safetensors"),
        (lambda o: _edit_json(o / "env.json", bundle_id="0" * 64), "records bundle 000000"),
        (lambda o: _edit_json(o / "env.json", libraries__torch="1.0.0"), "torch 1.0.0 ran"),
        (lambda o: _edit_json(o / "results.json", world_size=1), "world size"),
        (lambda o: _edit_json(o / "results.json", steps=99), "99 steps"),
    ],
)
def test_outputs_that_do_not_match_the_recipe_are_refused_with_exit_1(
    bundle: Path, cluster_run: Path, tmp_path: Path, change: Any, said: str
) -> None:
    target = _copy_bundle(bundle, tmp_path / "bundle")
    before = (target / "manifest-sha256.txt").read_text()
    done = run_cli("record", str(target), str(_tampered(cluster_run, tmp_path, change)))
    assert done.returncode == 1, done.stderr
    assert said in done.stderr and "nothing was added" in done.stderr
    assert (target / "manifest-sha256.txt").read_text() == before and not (target / "data" / "runs").exists()


@pytest.mark.slow
def test_another_world_size_than_expected_is_refused(bundle: Path, cluster_run: Path, tmp_path: Path) -> None:
    done = run_cli("record", str(_copy_bundle(bundle, tmp_path / "b")), str(cluster_run), "--world-size", "4")
    assert done.returncode == 1 and "world size 2 ran, 4 was expected" in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "said"),
    [
        (lambda o: (o / "results.json").unlink(), "missing results.json"),
        (lambda o: (o / "link").symlink_to("/etc/passwd"), "link or special file"),
        (lambda o: (o / "env.json").write_text("[1, 2]"), "not a JSON object"),
        (lambda o: (o / "README.md").write_text("card"), "README.md"),
    ],
)
def test_a_directory_that_is_not_run_outputs_exits_2(
    bundle: Path, cluster_run: Path, tmp_path: Path, change: Any, said: str
) -> None:
    done = run_cli("record", str(_copy_bundle(bundle, tmp_path / "b")), str(_tampered(cluster_run, tmp_path, change)))
    assert done.returncode == 2, done.stderr
    assert said in done.stderr and "hint:" in done.stderr


def test_only_the_master_pod_mounts_the_output_volume_of_a_pytorchjob(manifests: dict[str, Path]) -> None:
    replicas = documents(manifests["pytorchjob"])["PyTorchJob"]["spec"]["pytorchReplicaSpecs"]
    volumes = {kind: {v["name"]: v for v in spec["template"]["spec"]["volumes"]} for kind, spec in replicas.items()}
    assert "persistentVolumeClaim" in volumes["Master"]["out"] and volumes["Worker"]["out"] == {
        "name": "out",
        "emptyDir": {},
    }
    assert volumes["Master"]["model"] == volumes["Worker"]["model"]
