"""The facts a model card states, read from the bundle alone, and the card's text helpers.

A missing value reads "not recorded"; a value that could be a local path or a secret is withheld.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bundler.bundle.bag import read_bag_info
from bundler.bundle.hashing import sha256_file
from bundler.bundle.scrub import find_secret
from bundler.publish.cardmeta import LOCAL_PATH
from bundler.records import RecipeView, RunView, hardware_digest

NOT_RECORDED = "not recorded"
# Dataset sources recorded in these forms name a dataset on the Hub (and go into `datasets:`).
_HUB_DATASET = re.compile(r"^(?:hf://datasets/|hub:|https://huggingface\.co/datasets/)([\w.-]+/[\w.-]+)")

# (results.json eval key, split, metric type, metric name)
EVAL_METRICS = [
    ("val_loss", "validation", "loss", "Validation loss"),
    ("test_loss", "test", "loss", "Test loss"),
    ("accuracy", "test", "accuracy", "Accuracy"),
    ("macro_f1", "test", "f1", "Macro F1"),
]


@dataclass
class BundleFacts:
    """The bundle and run files the card reads; each is {} (or []) when the bundle lacks it."""

    bundle_id: str | None
    recipe: RecipeView
    model: dict[str, Any]
    dataset: dict[str, Any]
    splits: dict[str, Any]
    source: dict[str, Any]
    image: dict[str, Any]
    lock_sha256: str | None
    results: dict[str, Any]
    metrics: list[dict[str, Any]]
    env: dict[str, Any]
    run: dict[str, Any]
    adapter_file_sha256: str | None

    @classmethod
    def read(cls, bundle_dir: Path, run_dir: Path) -> BundleFacts:
        recipe = RecipeView.of(bundle_dir)
        run = RunView.read(run_dir)
        bag_info = read_bag_info(bundle_dir)
        lock = recipe.path / "requirements.lock"
        adapter = run_dir / "adapter" / "adapter_model.safetensors"
        return cls(
            bundle_id=bag_info.get("Bundle-Id"),
            recipe=recipe,
            model=recipe.record("model.json"),
            dataset=recipe.record("dataset.json"),
            splits=recipe.record("splits.json"),
            # The origin URL sits in bag-info.txt, outside the ID (older bundles kept it in source.json).
            source={"repo": bag_info.get("Source-Origin"), **recipe.record("source.json")},
            image=recipe.record("image.lock.json"),
            lock_sha256=sha256_file(lock) if lock.is_file() else None,
            results=run.results,
            metrics=run.metrics,
            env=run.env,
            run=run.record,
            adapter_file_sha256=sha256_file(adapter) if adapter.is_file() else None,
        )

    def gguf_rows(self) -> list[tuple[str, str]]:
        """The GGUF file the base model was converted from, its hash, and how it was converted."""
        pinned = self.model.get("gguf")
        if self.model.get("source") != "gguf" or not isinstance(pinned, dict):
            return []
        name = pinned.get("file") or pinned.get("path")
        shipped = f" in {pinned['distribution']} {pinned.get('version')}" if pinned.get("distribution") else ""
        conversion = self.model.get("conversion") or {}
        versions = conversion.get("libraries") or {}
        fixes = conversion.get("fixes") or []
        return [
            ("Base model GGUF file", f"{code(name)}{public(shipped) if shipped else ''}"),
            ("Base model GGUF sha256", code(pinned.get("sha256"))),
            (
                "GGUF conversion",
                f"transformers {public(versions.get('transformers'))}, gguf {public(versions.get('gguf'))}, "
                f"{public(conversion.get('dtype'))}; fixes: {'; '.join(map(public, fixes)) or 'none'}",
            ),
        ]

    def before_after(self) -> list[tuple[str, str, str]]:
        """(metric, base model, adapter) for the test-split label scores, when the run measured the base."""
        evaluation = self.results.get("eval") or {}
        base = evaluation.get("base")
        if not isinstance(base, dict):
            return []
        return [
            (name, number(base.get(key)), number(evaluation.get(key)))
            for key, name in (("accuracy", "Accuracy"), ("macro_f1", "Macro F1"), ("val_loss", "Validation loss"))
            if key in base
        ]

    def lineage(self, run_id: str) -> list[tuple[str, str]]:
        commit = self.source.get("commit")
        if commit and self.source.get("dirty"):
            commit = f"{commit} (uncommitted changes were allowed and packaged as a patch)"
        repo = self.source.get("repo")
        public_repo = repo if isinstance(repo, str) and repo.startswith("https://") else None
        adapter_sha = self.results.get("adapter_sha256") or self.adapter_file_sha256
        dataset_files = self.dataset.get("files") or {}
        rows = [
            ("Bundle ID", code(self.bundle_id)),
            ("Run ID", code(run_id)),
            ("Code commit", code(commit)),
            ("Code tree", code(self.source.get("tree"))),
            (
                "Code repository",
                public(public_repo) if public_repo else NOT_RECORDED + " (not public)",
            ),
            ("requirements.lock sha256", code(self.lock_sha256)),
            ("Base image", public(self.image.get("reference"))),
            ("Base image digest", code(self.image.get("digest"))),
            ("Base model", code(self.model.get("id"))),
            ("Base model revision", code(self.model.get("revision"))),
            *self.gguf_rows(),
            ("Base model files", files_summary(self.model.get("files"))),
            ("Dataset", public(hub_dataset(self.dataset) or self.dataset.get("format"))),
            ("Dataset sha256", files_summary(dataset_files)),
            (
                "Split method",
                public(_split_method(self.splits) or self.recipe.value("split.method")),
            ),
            ("Seeds", self.seeds()),
            ("Adapter sha256 (adapter_model.safetensors)", code(adapter_sha)),
            ("Adapter tensors sha256", code(self.results.get("adapter_tensor_sha256"))),
            ("Training steps", public(self.results.get("steps"))),
            ("Final train loss", number(self.results.get("final_train_loss"))),
            ("Runner", public(self.run.get("runner") or self.env.get("runner"))),
            ("Version drift allowed", public(self.run.get("allow_drift"))),
        ]
        return [(label, cell(value)) for label, value in rows]

    def seeds(self) -> str:
        seeds = self.recipe.seeds()
        if all(v is None for v in seeds.values()):
            return NOT_RECORDED
        return ", ".join(f"{k}={NOT_RECORDED if v is None else v}" for k, v in seeds.items())

    def hyperparameters(self) -> list[tuple[str, str]]:
        return [
            (key, cell(public(json.dumps(value) if not isinstance(value, str) else value)))
            for key, value in self.recipe.hyperparameters()
        ]

    def determinism(self) -> list[tuple[str, str, str]]:
        settings = self.env.get("determinism") or {}
        rows = []
        for name in sorted(settings):
            entry = settings[name] if isinstance(settings[name], dict) else {"value": settings[name]}
            value = entry.get("value")
            rows.append(
                (
                    cell(name),
                    cell(public(json.dumps(value) if not isinstance(value, str) else value)),
                    cell(public(entry.get("why"))),
                )
            )
        return rows

    def hardware(self) -> list[tuple[str, str]]:
        gpu = self.env.get("gpu")
        cuda = self.env.get("cuda") or {}
        cpu = self.env.get("cpu") or {}
        if not self.env:
            return [("Environment", NOT_RECORDED)]
        if gpu:
            gpu_text = (
                f"{gpu.get('count', 1)} x {gpu.get('name')}, compute capability "
                f"{gpu.get('compute_capability')}, {gpu.get('sm_count')} SMs, driver CUDA "
                f"{gpu.get('driver_cuda_version') or NOT_RECORDED}"
            )
        else:
            gpu_text = "none (CPU run)"
        libraries = self.env.get("libraries") or {}
        rows = [
            (
                "Hardware fingerprint",
                code(hardware_digest(self.env)),
            ),
            ("GPU", public(gpu_text)),
            (
                "CUDA runtime / cuDNN / cuBLAS",
                " / ".join(public(cuda.get(k)) for k in ("runtime", "cudnn", "cublas")) if cuda else "none",
            ),
            ("CPU", public(f"{cpu.get('name') or NOT_RECORDED} ({cpu.get('machine') or '?'})")),
            ("Python", public(self.env.get("python"))),
            ("Platform", public(self.env.get("platform"))),
            ("Image digest at run time", code(self.env.get("image_digest"))),
            ("Data parallel", public(_world_text(self.env.get("distributed") or {}))),
            (
                "Libraries",
                public(", ".join(f"{k} {v}" for k, v in sorted(libraries.items())) if libraries else None),
            ),
        ]
        return [(label, cell(value)) for label, value in rows]

    def splits_table(self) -> list[tuple[str, str, str]]:
        splits = self.splits.get("splits") or {}
        return [
            (name, public(splits[name].get("count")), public(splits[name].get("root")))
            for name in ("train", "val", "test")
            if isinstance(splits.get(name), dict)
        ]

    def quantization(self) -> str:
        quant = self.recipe.value("lora.quantization")
        if quant is None:
            return f"4-bit quantization: {NOT_RECORDED}."
        if quant == "4bit":
            return (
                "4-bit quantization: **yes** (QLoRA: the base model was loaded in 4 bits with "
                "bitsandbytes; load it the same way for matching results)."
            )
        return "4-bit quantization: **no** (the base model was loaded unquantized)."


def hub_dataset(dataset: dict[str, Any]) -> str | None:
    """The dataset's Hub ID when dataset.json says it came from the Hub, else None."""
    for key in ("hub_id", "repo_id"):
        if isinstance(dataset.get(key), str):
            return dataset[key]
    match = _HUB_DATASET.match(str(dataset.get("source") or ""))
    return match.group(1) if match else None


def _split_method(splits: dict[str, Any]) -> str | None:
    """splits.json's method block as one line: name, seed, ratios, dedupe."""
    method = splits.get("method")
    if not isinstance(method, dict):
        return method if isinstance(method, str) else None
    ratios = method.get("ratios") or {}
    parts = [str(method.get("name")), f"seed {method.get('seed')}"]
    if ratios:
        # "train/val/test 0.8/0.1/0.1": a " / " separator reads as a local path to public() and was withheld
        names = [k for k in ("train", "val", "test") if k in ratios]
        parts.append(f"{'/'.join(names)} {'/'.join(f'{ratios[k]:g}' for k in names)}")
    dedupe = splits.get("dedupe")
    if isinstance(dedupe, dict) and dedupe.get("mode"):
        parts.append(f"dedupe {dedupe['mode']}")
    return ", ".join(parts)


def public(value: object) -> str:
    """The value as card text; a local path or a secret never gets through."""

    if value is None or value == "":
        return NOT_RECORDED
    text = str(value)
    if find_secret(text):
        return "(withheld: looks like a secret)"
    if LOCAL_PATH.search(text):
        return "(withheld: local path)"
    return text


def _world_text(world: dict[str, Any]) -> str:
    """World size, topology, backend and NCCL version of a run (env.json `distributed`)."""
    size = world.get("world_size", 1)
    if size == 1:
        return "1 process"
    nccl = f", NCCL {world['nccl']}" if world.get("nccl") else ""
    return f"world size {size} ({world.get('topology') or 'topology not recorded'}), {world.get('backend')}{nccl}"


def code(value: object) -> str:
    text = public(value)
    return text if text == NOT_RECORDED or text.startswith("(withheld") else f"`{text}`"


def number(value: object) -> str:
    return f"{value:.6g}" if isinstance(value, (int, float)) else NOT_RECORDED


def cell(text: str) -> str:
    """Escape a value for a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def files_summary(files: object) -> str:
    if not isinstance(files, dict) or not files:
        return NOT_RECORDED
    if len(files) == 1:
        ((name, sha),) = files.items()
        return f"`{sha}` ({public(name)})"
    listing = "; ".join(f"{public(name)} `{sha[:16]}`" for name, sha in sorted(files.items()))
    return f"{len(files)} files: {listing}"
