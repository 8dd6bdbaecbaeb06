"""`bundler run BUNDLE --emit kubernetes`: manifests that run the bundle's image, by digest, as a multi-node job.

Two forms of the same run, one directory each way of launching it:
- pytorchjob.yaml: a Kubeflow Training Operator PyTorchJob (kubeflow.org/v1): one Master pod (node rank 0,
  which writes the outputs) and N-1 Workers; the operator sets PET_NNODES, PET_NODE_RANK, PET_MASTER_ADDR
  and PET_MASTER_PORT (pkg/controller.v1/pytorch/envvar.go, v1.9.0), which torchrun reads as its defaults;
- indexed-job.yaml: for clusters without the operator, an Indexed Job (batch/v1) whose completion index is
  the node rank, and a headless Service so node 0 resolves as <job>-0.<service> for torchrun's rendezvous.
Both start `python -m torch.distributed.run --module runtime /bundle/recipe /out` in every pod: torchrun
starts one rank a GPU; the runtime, started by torchrun, trains at once (it launches nothing itself).

Every pod: the image by digest, the determinism environment of the runners (launch.DETERMINISM_ENV) and
the runtime's NCCL settings (runtime/distributed.py LAUNCH_ENV, read from its source: no torch here),
nvidia.com/gpu requests, model and data mounted read-only, one writable output volume the user names,
a non-root user, a read-only root filesystem, no capabilities, and a NetworkPolicy that lets the job's
pods reach each other (rendezvous, NCCL) and DNS, and nothing else.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bundler.bundle.atomic import atomic_write_text
from bundler.bundle.bag import bundle_id_of
from bundler.errors import InputError
from bundler.records import RecipeView
from bundler.runners.launch import DETERMINISM_ENV

MANIFEST_SCHEMA = "bundler.kubernetes/1"
RUNTIME_SOURCE = Path(__file__).resolve().parents[1] / "runtime" / "distributed.py"
RECIPE_IN_IMAGE, OUT_MOUNT, MODEL_MOUNT, DATA_MOUNT = "/bundle/recipe", "/out", "/mnt/model", "/mnt/data"
IMAGE_UID = 1000  # templates/Dockerfile.j2: USER 1000:1000
CONTAINER = "pytorch"  # the PyTorchJob operator finds its port on the container of this name
RENDEZVOUS_PORT = 23456  # the operator's default (PyTorchJobDefaultPort); the Indexed Job uses the same
LABEL = "bundler.dev/job"
# Loopback-only settings of a single-machine launch; across pods NCCL and gloo must choose a real interface.
SINGLE_HOST_ONLY = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")
_DIGEST_REF = re.compile(r"^[a-z0-9]+(?:[._/:-][a-z0-9]+)*@sha256:[0-9a-f]{64}$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class VolumeSource:
    """Where a mount comes from on the cluster: a PersistentVolumeClaim (and a sub-path in it) or a host path."""

    kind: str  # "pvc" or "hostpath"
    name: str  # the claim name, or the absolute host path
    sub_path: str = ""

    @classmethod
    def parse(cls, text: str, option: str) -> VolumeSource:
        """`pvc:CLAIM[/SUB/PATH]` or `hostpath:/ABSOLUTE/PATH`."""
        kind, _, rest = text.partition(":")
        if kind == "pvc" and rest:
            claim, _, sub_path = rest.partition("/")
            if _DNS_LABEL.match(claim) and ".." not in sub_path.split("/"):
                return cls("pvc", claim, sub_path.strip("/"))
        if kind == "hostpath" and rest.startswith("/") and ".." not in rest.split("/"):
            return cls("hostpath", rest.rstrip("/") or "/")
        raise InputError(
            f"{option} {text!r} names no volume this can mount",
            f"write {option} pvc:CLAIM[/SUB/PATH] (a PersistentVolumeClaim) or {option} hostpath:/ABSOLUTE/PATH",
        )

    def volume(self, name: str, read_only: bool) -> dict[str, Any]:
        if self.kind == "pvc":
            return {"name": name, "persistentVolumeClaim": {"claimName": self.name, "readOnly": read_only}}
        return {"name": name, "hostPath": {"path": self.name, "type": "Directory"}}

    def mount(self, name: str, path: str, read_only: bool) -> dict[str, Any]:
        mount: dict[str, Any] = {"name": name, "mountPath": path, "readOnly": read_only}
        if self.sub_path:
            mount["subPath"] = self.sub_path
        return mount


@dataclass(frozen=True)
class ClusterRun:
    """One bundle run on a cluster: the image, the shape (nodes x GPUs a node) and the three volumes."""

    bundle_id: str
    image: str
    nodes: int
    gpus_per_node: int
    model: VolumeSource
    data: VolumeSource
    output: VolumeSource
    namespace: str | None = None
    max_steps: int | None = None

    @property
    def name(self) -> str:
        return f"bundler-{self.bundle_id[:12]}"

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node


def runtime_launch_env() -> dict[str, str]:
    """The runtime's LAUNCH_ENV, read from runtime/distributed.py's source (importing it would import torch)."""
    tree = ast.parse(RUNTIME_SOURCE.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "LAUNCH_ENV" for t in node.targets):
            return dict(ast.literal_eval(node.value))
    raise RuntimeError(f"{RUNTIME_SOURCE} defines no LAUNCH_ENV")  # a broken install, not a user error


def check_image(image: str | None) -> str:
    """The image reference, refused unless pinned by digest (a tag can move between the emit and the run)."""
    if not image or not _DIGEST_REF.match(image):
        raise InputError(
            f"--image {image!r} is not pinned by digest (REPOSITORY@sha256:<64 hex>)",
            "push the bundle's image (`docker push`) and pass the digest the registry returned, "
            "e.g. `docker inspect --format '{{index .RepoDigests 0}}' bundler/bundle:<bundle-id>`",
        )
    return image


def plan_run(
    bundle: Path,
    *,
    image: str | None,
    nodes: int,
    gpus_per_node: int,
    model: str | None,
    data: str | None,
    output: str | None,
    namespace: str | None = None,
    max_steps: int | None = None,
) -> ClusterRun:
    """Check the options against the bundle (image pinned, volumes named, batch splits over the world)."""
    missing = [option for option, value in (("--model-uri", model), ("--data-uri", data), ("--output-uri", output))
               if not value]  # fmt: skip
    if missing:
        raise InputError(
            f"--emit kubernetes needs {', '.join(missing)}: where the cluster finds the model and data, "
            "and where the run's outputs go",
            "pass each as pvc:CLAIM[/SUB/PATH] or hostpath:/ABSOLUTE/PATH",
        )
    if namespace is not None and not _DNS_LABEL.match(namespace):
        raise InputError(f"--namespace {namespace!r} is not a DNS label", "use lowercase letters, digits and '-'")
    run = ClusterRun(
        bundle_id_of(bundle),
        check_image(image),
        nodes,
        gpus_per_node,
        VolumeSource.parse(str(model), "--model-uri"),
        VolumeSource.parse(str(data), "--data-uri"),
        VolumeSource.parse(str(output), "--output-uri"),
        namespace,
        max_steps,
    )
    batch_size = int(RecipeView.of(bundle).value("train.batch_size") or 8)
    if batch_size % run.world_size:
        raise InputError(
            f"train.batch_size = {batch_size} does not split evenly over {run.nodes} node(s) x "
            f"{run.gpus_per_node} GPU(s) = {run.world_size} ranks",
            f"choose --nodes and --gpus-per-node whose product divides {batch_size}",
        )
    return run


def _environment(run: ClusterRun) -> list[dict[str, Any]]:
    launch = {k: v for k, v in runtime_launch_env().items() if k not in SINGLE_HOST_ONLY}
    env = {
        **DETERMINISM_ENV,
        **launch,
        "BUNDLER_RUNNER": "kubernetes",
        "BUNDLER_IMAGE_DIGEST": run.image.rsplit("@", 1)[1],
        "BUNDLER_MODEL_DIR": MODEL_MOUNT,
        "BUNDLER_DATA_DIR": DATA_MOUNT,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
    }
    if run.max_steps:
        env["BUNDLER_MAX_STEPS"] = str(run.max_steps)
    return [{"name": name, "value": value} for name, value in sorted(env.items())]


def _pod_spec(run: ClusterRun, extra_env: list[dict[str, Any]], subdomain: str | None, writes: bool) -> dict[str, Any]:
    gpus = str(run.gpus_per_node)
    container = {
        "name": CONTAINER,
        "image": run.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "torch.distributed.run"],
        "args": ["--max-restarts", "0", "--module", "runtime", RECIPE_IN_IMAGE, OUT_MOUNT],
        "env": sorted(_environment(run) + extra_env, key=lambda e: e["name"]),
        "ports": [{"name": "pytorchjob-port", "containerPort": RENDEZVOUS_PORT, "protocol": "TCP"}],
        "resources": {"limits": {"nvidia.com/gpu": gpus}, "requests": {"nvidia.com/gpu": gpus}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
        },
        "volumeMounts": [
            run.model.mount("model", MODEL_MOUNT, True),
            run.data.mount("data", DATA_MOUNT, True),
            run.output.mount("out", OUT_MOUNT, False),
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "shm", "mountPath": "/dev/shm"},  # NCCL's shared-memory transport between local ranks
        ],
    }
    spec: dict[str, Any] = {
        "containers": [container],
        "restartPolicy": "Never",  # a restarted rank would train from step 0 into a half-written output
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsUser": IMAGE_UID,
            "runAsGroup": IMAGE_UID,
            "fsGroup": IMAGE_UID,
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumes": [
            run.model.volume("model", True),
            run.data.volume("data", True),
            # only rank 0 writes into /out: other pods get a scratch volume, so a ReadWriteOnce claim will do
            run.output.volume("out", False) if writes else {"name": "out", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "shm", "emptyDir": {"medium": "Memory"}},
        ],
    }
    if subdomain:
        spec["subdomain"] = subdomain
    return spec


def _metadata(run: ClusterRun, name: str) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "labels": {LABEL: run.name},
        "annotations": {"bundler.dev/bundle-id": run.bundle_id},  # 64 hex: longer than a label value may be
    }
    if run.namespace:
        meta["namespace"] = run.namespace
    return meta


def _template(
    run: ClusterRun, extra_env: list[dict[str, Any]], subdomain: str | None = None, writes: bool = True
) -> dict[str, Any]:
    return {"metadata": {"labels": {LABEL: run.name}}, "spec": _pod_spec(run, extra_env, subdomain, writes)}


def network_policy(run: ClusterRun) -> dict[str, Any]:
    """Ingress only from the job's own pods; egress only to them and to cluster DNS (port 53)."""
    peers = [{"podSelector": {"matchLabels": {LABEL: run.name}}}]
    dns = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(run, f"{run.name}-ranks-only"),
        "spec": {
            "podSelector": {"matchLabels": {LABEL: run.name}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": peers}],
            "egress": [{"to": peers}, {"ports": dns, "to": [{"namespaceSelector": {}}]}],
        },
    }


def pytorch_job(run: ClusterRun) -> dict[str, Any]:
    """The PyTorchJob: Master (node rank 0, writes the outputs) plus nodes - 1 Workers; torchrun per pod."""
    replicas = {"Master": {"replicas": 1, "restartPolicy": "Never", "template": _template(run, [])}}
    if run.nodes > 1:
        worker = _template(run, [], writes=False)
        replicas["Worker"] = {"replicas": run.nodes - 1, "restartPolicy": "Never", "template": worker}
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": _metadata(run, run.name),
        "spec": {
            "nprocPerNode": str(run.gpus_per_node),
            "pytorchReplicaSpecs": replicas,
            "runPolicy": {"backoffLimit": 0, "cleanPodPolicy": "None"},
        },
    }


def indexed_job(run: ClusterRun) -> list[dict[str, Any]]:
    """The headless Service and the Indexed Job: completion index = node rank, pod 0 hosts the rendezvous.

    One pod template for every index: all pods mount the output volume (ReadWriteMany, or a hostPath);
    only pod 0's rank 0 writes into it.
    """
    service = f"{run.name}-ranks"
    index = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    torchrun_env = [
        {"name": "PET_NNODES", "value": str(run.nodes)},
        {"name": "PET_NPROC_PER_NODE", "value": str(run.gpus_per_node)},
        {"name": "PET_MASTER_ADDR", "value": f"{run.name}-0.{service}"},
        {"name": "PET_MASTER_PORT", "value": str(RENDEZVOUS_PORT)},
        {"name": "PET_NODE_RANK", "valueFrom": {"fieldRef": {"fieldPath": index}}},
    ]
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _metadata(run, service),
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": True,  # the rendezvous starts before any pod is Ready
                "selector": {LABEL: run.name},
                "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT, "protocol": "TCP"}],
            },
        },
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": _metadata(run, run.name),
            "spec": {
                "completionMode": "Indexed",
                "completions": run.nodes,
                "parallelism": run.nodes,
                "backoffLimit": 0,
                "template": _template(run, torchrun_env, subdomain=service),
            },
        },
    ]


def render(documents: list[dict[str, Any]], run: ClusterRun, form: str) -> str:
    """Deterministic YAML: a header naming the command and bundle, sorted keys, no timestamps."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True  # every value written out in full: no &anchors for a reader to resolve

    header = (
        f"# Generated by `bundler run BUNDLE --emit kubernetes` ({MANIFEST_SCHEMA}); do not edit.\n"
        f"# {form}: bundle {run.bundle_id}, {run.nodes} node(s) x {run.gpus_per_node} GPU(s) = world size "
        f"{run.world_size}.\n"
        f"# After it finishes: bundler record BUNDLE <the output volume's contents>\n"
    )
    body = "---\n".join(yaml.dump(doc, Dumper=Dumper, sort_keys=True, default_flow_style=False) for doc in documents)
    return header + "---\n" + body


def write_manifests(run: ClusterRun, out_dir: Path) -> dict[str, Path]:
    """Write pytorchjob.yaml and indexed-job.yaml into out_dir (atomically); return them by form."""

    out_dir.mkdir(parents=True, exist_ok=True)
    forms = {
        "pytorchjob": [network_policy(run), pytorch_job(run)],
        "indexed-job": [network_policy(run), *indexed_job(run)],
    }
    written = {}
    for form, documents in forms.items():
        path = out_dir / f"{form}.yaml"
        atomic_write_text(path, render(documents, run, form))
        written[form] = path
    return written
