"""The model card of a run: huggingface_hub ModelCard with lineage read from the bundle alone.

The card reads only bundle files (recipe, run outputs, bag-info.txt), never the project, so it can
be written for any bundle, including older ones that lack some files: a missing value reads
"not recorded". Nothing that could be a local path or a secret reaches the card; `render_card`
checks the finished text before returning it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

from bundler.bundle.bag import read_json_object
from bundler.errors import CardMetadataError, InputError, SecretError

TEMPLATE = "modelcard.md.j2"
NOT_RECORDED = "not recorded"
TAGS = ["lora", "reproducible", "bundler"]
# Dataset sources recorded in these forms name a dataset on the Hub (and go into `datasets:`).
_HUB_DATASET = re.compile(r"^(?:hf://datasets/|hub:|https://huggingface\.co/datasets/)([\w.-]+/[\w.-]+)")
# Anything that looks like a local filesystem path: absolute POSIX, home-relative, Windows, file://.
_LOCAL_PATH = re.compile(r"(?:^|[\s\"'=(])(?:/(?!/)[^\s|]*|~[/\\]|[A-Za-z]:[\\/]|file://|\.\.?/)")


@dataclass(frozen=True)
class RenderedCard:
    """README.md text and the loss image (None when the run recorded no loss)."""

    text: str
    loss_png: bytes | None
    metadata: dict[str, Any]


def write_card(bundle_dir: Path, run_id: str, *, repo_id: str | None = None) -> Path:
    """Write data/runs/<run-id>/README.md and loss.png; return the README path.

    When the bundle is sealed (has a payload manifest), the files go through
    `bundle.record_run_file`, so `bundler verify` stays green; they are run annotations and never
    change the run ID.
    """
    card = render_card(bundle_dir, run_id, repo_id=repo_id)
    return store_card(bundle_dir, run_id, card)


def store_card(bundle_dir: Path, run_id: str, card: RenderedCard) -> Path:
    """Write a rendered card into the run directory (skipping files whose bytes are unchanged)."""
    run_dir = bundle_dir / "data" / "runs" / run_id
    files = {"README.md": card.text.encode("utf-8")}
    if card.loss_png is not None:
        files["loss.png"] = card.loss_png
    for name, data in files.items():
        target = run_dir / name
        if target.is_file() and target.read_bytes() == data:
            continue
        _record(bundle_dir, run_id, name, data)
    return run_dir / "README.md"


def _record(bundle_dir: Path, run_id: str, name: str, data: bytes) -> None:
    if (bundle_dir / "manifest-sha256.txt").is_file():
        from bundler.bundle.bag import record_run_file

        record_run_file(bundle_dir, run_id, name, data)
    else:
        from bundler.bundle.atomic import atomic_write_bytes

        atomic_write_bytes(bundle_dir / "data" / "runs" / run_id / name, data)


def render_card(bundle_dir: Path, run_id: str, *, repo_id: str | None = None, strict: bool = False) -> RenderedCard:
    """Build the card text from the bundle's files.

    Not strict (writing a card into a bundle): a missing or unusable value reads "not recorded" and
    is left out of the metadata. Strict (before a push): any metadata the Hub would refuse, or a
    missing base model, raises CardMetadataError.
    """
    from huggingface_hub import EvalResult, ModelCardData

    from bundler.paths import render_template
    from bundler.publish.plots import render_loss_png

    run_dir = bundle_dir / "data" / "runs" / run_id
    if not run_dir.is_dir():
        raise InputError(
            f"run {run_id} does not exist in {bundle_dir}",
            "`bundler inspect <bundle>` lists the runs",
        )
    facts = BundleFacts.read(bundle_dir, run_dir)
    config = facts.config
    project = _get(config, "project", "name") or "adapter"
    base_model = facts.model.get("id")
    dataset_hub_id = _hub_dataset(facts.dataset)
    license_id = _get(config, "publish", "license") or "other"
    if strict:
        problems = metadata_problems(
            {
                "base_model": base_model,
                "license": license_id,
                "library_name": "peft",
                "datasets": [dataset_hub_id] if dataset_hub_id else [],
            }
        )
        if problems:
            raise CardMetadataError(problems)
    else:
        base_model = base_model if not metadata_problems({"base_model": base_model}, only="base_model") else None
        license_id = license_id if not metadata_problems({"license": license_id}, only="license") else "other"
        dataset_hub_id = (
            dataset_hub_id if not metadata_problems({"datasets": [dataset_hub_id]}, only="datasets") else None
        )
    load_repo = repo_id or _get(config, "publish", "repo") or "ORG/NAME"

    eval_results = [
        EvalResult(
            task_type="text-generation",
            task_name="Text generation",
            dataset_type=dataset_hub_id or "custom",
            dataset_name=dataset_hub_id or f"{project} ({split} split)",
            dataset_split=split,
            metric_type=metric,
            metric_name=name,
            metric_value=float(value),
        )
        for key, split, metric, name in _EVAL_METRICS
        if isinstance(value := facts.results.get("eval", {}).get(key), (int, float))
    ]
    try:
        card_data = ModelCardData(
            base_model=base_model,
            library_name="peft",
            license=license_id,
            tags=TAGS,
            datasets=[dataset_hub_id] if dataset_hub_id else None,
            model_name=(repo_id or project).split("/")[-1],
            eval_results=eval_results or None,
            pipeline_tag="text-generation",
        )
    except ValueError as exc:
        raise CardMetadataError([str(exc)]) from None

    loss_png = render_loss_png(facts.metrics)
    name = load_repo.split("/")[-1] if repo_id else project
    link = f"[{_public(base_model)}](https://huggingface.co/{_public(base_model)})"
    values = {
        "card_data": card_data.to_yaml(),
        "title": f"{name}: LoRA adapter for {_public(base_model)}",
        "summary": (
            f"A LoRA adapter for {link}, fine-tuned with "
            "[bundler](https://pypi.org/project/bundler-repro/) from a content-hashed run "
            "bundle that pins the environment, code, data splits and seeds."
        ),
        "lineage": facts.lineage(run_id) + provenance_rows(bundle_dir, run_id),
        "hyperparameters": facts.hyperparameters(),
        "determinism": facts.determinism(),
        "hardware": facts.hardware(),
        "splits": facts.splits_table(),
        "evals": [(r.metric_name, f"{r.metric_value:.6g}") for r in eval_results],
        "before_after": facts.before_after(),
        "loss_image": "loss.png" if loss_png is not None else None,
        "quantization": facts.quantization(),
        "load_repo": _public(load_repo),
        "base_model": _public(base_model),
        "base_revision": _public(facts.model.get("revision")),
        "verify_command": "bundler verify <bundle>",
        "model_signature_key": model_signature_key(bundle_dir, run_id),
        "replay_command": f"bundler replay <bundle> --run {run_id}" + check_lines(facts, run_id, repo_id),
    }
    text = render_template(TEMPLATE, **values)
    card = parse_card(text, strict=strict)
    final = str(card)
    _refuse_leaks(final, bundle_dir)
    return RenderedCard(final, loss_png, card.data.to_dict())


def provenance_rows(bundle_dir: Path, run_id: str) -> list[tuple[str, str]]:
    """Lineage rows linking the run's signed in-toto statement in the newest signature (`bundler sign`).

    `bundler push` uploads the tag area under bundle/, so the link resolves in the Hub repo. A signature
    covers every file of the bundle at signing time, this card included (bundler.bundle.attest).
    """
    from bundler.bundle.attest import SIGNER_FILE, envelope_file, signature_dirs
    from bundler.bundle.bag import SIGNATURES

    root = bundle_dir / SIGNATURES
    names = signature_dirs([f"{SIGNATURES}/{p.name}/x" for p in root.iterdir()]) if root.is_dir() else []
    signed = [n for n in names if (root / n / envelope_file(run_id)).is_file()]
    if not signed:
        return []
    envelope = f"{SIGNATURES}/{signed[-1]}/{envelope_file(run_id)}"
    keyid = read_json_object(root / signed[-1] / SIGNER_FILE).get("keyid")
    algorithm = read_json_object(root / signed[-1] / SIGNER_FILE).get("algorithm", "ed25519")
    link = f"[bundle/{envelope}](bundle/{envelope})"
    return [
        ("Signed provenance", _cell(f"{link} (in-toto SLSA v1 statement, DSSE {algorithm})")),
        ("Signing key", _cell(_code(keyid))),
        ("Signature covers", _cell("every file of the bundle when it was signed, this card included")),
    ]


def model_signature_key(bundle_dir: Path, run_id: str) -> str | None:
    """The key ID that made the run's model.sig (OpenSSF Model Signing, issue 21), or None when unsigned.

    model.sig is written once, by the first `bundler sign` with an EC key: the oldest EC signature's key.
    """
    from bundler.bundle.attest import SIGNER_FILE, signature_dirs
    from bundler.bundle.bag import SIGNATURES

    root = bundle_dir / SIGNATURES
    if not (bundle_dir / "data" / "runs" / run_id / "model.sig").is_file() or not root.is_dir():
        return None
    for name in signature_dirs([f"{SIGNATURES}/{p.name}/x" for p in root.iterdir()]):
        signer = read_json_object(root / name / SIGNER_FILE)
        if str(signer.get("algorithm", "")).startswith("ecdsa-") and signer.get("keyid"):
            return str(signer["keyid"])
    return None


# --- replay section: `bundler check` (check.py, issue 12) ---
def check_lines(facts: BundleFacts, run_id: str, repo_id: str | None) -> str:
    """Lines after the replay command: the inference-level check and the reference file's sha256.

    They ride in the replay code block so the template needs no new value; an older run without
    reference outputs gets none.
    """
    sha = facts.results.get("reference_outputs_sha256")
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
        return ""
    lines = [
        f"# no retraining: inference on the test split, compared with reference_outputs.jsonl (sha256 {sha})",
        f"bundler check <bundle> --run {run_id}",
    ]
    if repo_id:
        lines.append(f"bundler check <bundle> --run {run_id} --adapter {_public(repo_id)}")
    return "\n" + "\n".join(lines)


def parse_card(text: str, *, strict: bool = True) -> Any:
    """Parse the card with huggingface_hub (its own metadata checks), or CardMetadataError."""
    from huggingface_hub import ModelCard

    try:
        card = ModelCard(text)
    except (ValueError, TypeError) as exc:
        raise CardMetadataError([str(exc)]) from None
    problems = metadata_problems(card.data.to_dict()) if strict else []
    if problems:
        raise CardMetadataError(problems)
    return card


def metadata_problems(metadata: dict[str, Any], only: str | None = None) -> list[str]:
    """What the Hub would refuse in the metadata that huggingface_hub's parser lets through."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if only is not None:
        return [p for p in metadata_problems(metadata) if p.startswith(only)]
    problems = []
    base = metadata.get("base_model")
    if not base:
        problems.append("base_model is not recorded (model.json has no 'id')")
    for value in base if isinstance(base, list) else [base] if base else []:
        try:
            validate_repo_id(value)
            if _LOCAL_PATH.search(value) or value.count("/") != 1:
                raise HFValidationError("not ORG/NAME")
        except HFValidationError:
            problems.append(f"base_model must be a Hub model ID (ORG/NAME), not {value!r}")
    if metadata.get("library_name") != "peft":
        problems.append("library_name must be 'peft'")
    license_id = metadata.get("license")
    if not isinstance(license_id, str) or not re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", license_id):
        problems.append(f"license must be a Hub license identifier such as 'apache-2.0', not {license_id!r}")
    for dataset in metadata.get("datasets") or []:
        try:
            validate_repo_id(dataset)
        except HFValidationError:
            problems.append(f"datasets entries must be Hub dataset IDs, not {dataset!r}")
    return problems


def _refuse_leaks(text: str, bundle_dir: Path) -> None:
    """A card is public: refuse one that carries a secret or the bundle's own location."""
    from bundler.bundle.scrub import find_secret

    kind = find_secret(text)
    if kind:
        raise SecretError("the model card", kind)
    for where in {str(bundle_dir), str(bundle_dir.resolve()), str(Path.home())} - {"/", "."}:
        if where in text:
            raise SecretError("the model card", f"local path {where}")


# (results.json eval key, split, metric type, metric name)
_EVAL_METRICS = [
    ("val_loss", "validation", "loss", "Validation loss"),
    ("test_loss", "test", "loss", "Test loss"),
    ("accuracy", "test", "accuracy", "Accuracy"),
    ("macro_f1", "test", "f1", "Macro F1"),
]


@dataclass
class BundleFacts:
    """The bundle and run files the card reads; each is {} (or []) when the bundle lacks it."""

    bundle_id: str | None
    config: dict[str, Any]
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
        from bundler.bundle.hashing import sha256_file

        recipe = bundle_dir / "data" / "recipe"
        lock = recipe / "requirements.lock"
        adapter = run_dir / "adapter" / "adapter_model.safetensors"
        return cls(
            bundle_id=_bag_info(bundle_dir).get("Bundle-Id"),
            config=_toml(recipe / "config.toml"),
            model=read_json_object(recipe / "model.json"),
            dataset=read_json_object(recipe / "dataset.json"),
            splits=read_json_object(recipe / "splits.json"),
            # The origin URL sits in bag-info.txt, outside the ID (older bundles kept it in source.json).
            source={"repo": _bag_info(bundle_dir).get("Source-Origin"), **read_json_object(recipe / "source.json")},
            image=read_json_object(recipe / "image.lock.json"),
            lock_sha256=sha256_file(lock) if lock.is_file() else None,
            results=read_json_object(run_dir / "results.json"),
            metrics=_jsonl(run_dir / "metrics.jsonl"),
            env=read_json_object(run_dir / "env.json"),
            run=read_json_object(run_dir / "run.json"),
            adapter_file_sha256=sha256_file(adapter) if adapter.is_file() else None,
        )

    def lineage(self, run_id: str) -> list[tuple[str, str]]:
        commit = self.source.get("commit")
        if commit and self.source.get("dirty"):
            commit = f"{commit} (uncommitted changes were allowed and packaged as a patch)"
        repo = self.source.get("repo")
        public_repo = repo if isinstance(repo, str) and repo.startswith("https://") else None
        adapter_sha = self.results.get("adapter_sha256") or self.adapter_file_sha256
        dataset_files = self.dataset.get("files") or {}
        rows = [
            ("Bundle ID", _code(self.bundle_id)),
            ("Run ID", _code(run_id)),
            ("Code commit", _code(commit)),
            ("Code tree", _code(self.source.get("tree"))),
            (
                "Code repository",
                _public(public_repo) if public_repo else NOT_RECORDED + " (not public)",
            ),
            ("requirements.lock sha256", _code(self.lock_sha256)),
            ("Base image", _public(self.image.get("reference"))),
            ("Base image digest", _code(self.image.get("digest"))),
            ("Base model", _code(self.model.get("id"))),
            ("Base model revision", _code(self.model.get("revision"))),
            *self.gguf_rows(),
            ("Base model files", _files_summary(self.model.get("files"))),
            ("Dataset", _public(_hub_dataset(self.dataset) or self.dataset.get("format"))),
            ("Dataset sha256", _files_summary(dataset_files)),
            (
                "Split method",
                _public(_split_method(self.splits) or _get(self.config, "split", "method")),
            ),
            ("Seeds", self.seeds()),
            ("Adapter sha256 (adapter_model.safetensors)", _code(adapter_sha)),
            ("Adapter tensors sha256", _code(self.results.get("adapter_tensor_sha256"))),
            ("Training steps", _public(self.results.get("steps"))),
            ("Final train loss", _number(self.results.get("final_train_loss"))),
            ("Runner", _public(self.run.get("runner") or self.env.get("runner"))),
            ("Version drift allowed", _public(self.run.get("allow_drift"))),
        ]
        return [(label, _cell(value)) for label, value in rows]

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
            ("Base model GGUF file", f"{_code(name)}{_public(shipped) if shipped else ''}"),
            ("Base model GGUF sha256", _code(pinned.get("sha256"))),
            (
                "GGUF conversion",
                f"transformers {_public(versions.get('transformers'))}, gguf {_public(versions.get('gguf'))}, "
                f"{_public(conversion.get('dtype'))}; fixes: {'; '.join(map(_public, fixes)) or 'none'}",
            ),
        ]

    def before_after(self) -> list[tuple[str, str, str]]:
        """(metric, base model, adapter) for the test-split label scores, when the run measured the base."""
        evaluation = self.results.get("eval") or {}
        base = evaluation.get("base")
        if not isinstance(base, dict):
            return []
        return [
            (name, _number(base.get(key)), _number(evaluation.get(key)))
            for key, name in (("accuracy", "Accuracy"), ("macro_f1", "Macro F1"), ("val_loss", "Validation loss"))
            if key in base
        ]

    def seeds(self) -> str:
        seeds = {
            "project": _get(self.config, "project", "seed"),
            "split": _get(self.config, "split", "seed"),
            "train": _get(self.config, "train", "seed"),
            "lora_init": _get(self.config, "lora", "init_seed"),
        }
        if all(v is None for v in seeds.values()):
            return NOT_RECORDED
        return ", ".join(f"{k}={NOT_RECORDED if v is None else v}" for k, v in seeds.items())

    def hyperparameters(self) -> list[tuple[str, str]]:
        rows = []
        for section in ("train", "lora"):
            for key, value in sorted((self.config.get(section) or {}).items()):
                rows.append(
                    (
                        f"{section}.{key}",
                        _cell(_public(json.dumps(value) if not isinstance(value, str) else value)),
                    )
                )
        return rows

    def determinism(self) -> list[tuple[str, str, str]]:
        settings = self.env.get("determinism") or {}
        rows = []
        for name in sorted(settings):
            entry = settings[name] if isinstance(settings[name], dict) else {"value": settings[name]}
            value = entry.get("value")
            rows.append(
                (
                    _cell(name),
                    _cell(_public(json.dumps(value) if not isinstance(value, str) else value)),
                    _cell(_public(entry.get("why"))),
                )
            )
        return rows

    def hardware(self) -> list[tuple[str, str]]:
        from bundler.bundle.hashing import canonical_json, sha256_bytes

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
        fingerprint = {
            "gpu": {k: gpu.get(k) for k in ("name", "count", "sm_count", "compute_capability")} if gpu else None,
            "cuda": {k: cuda.get(k) for k in ("runtime", "cudnn", "cublas")} if cuda else None,
            "cpu": cpu.get("machine"),
            "image_digest": self.env.get("image_digest"),
        }
        libraries = self.env.get("libraries") or {}
        rows = [
            (
                "Hardware fingerprint",
                _code(sha256_bytes(canonical_json(fingerprint).encode())[:16]),
            ),
            ("GPU", _public(gpu_text)),
            (
                "CUDA runtime / cuDNN / cuBLAS",
                " / ".join(_public(cuda.get(k)) for k in ("runtime", "cudnn", "cublas")) if cuda else "none",
            ),
            ("CPU", _public(f"{cpu.get('name') or NOT_RECORDED} ({cpu.get('machine') or '?'})")),
            ("Python", _public(self.env.get("python"))),
            ("Platform", _public(self.env.get("platform"))),
            ("Image digest at run time", _code(self.env.get("image_digest"))),
            ("Data parallel", _public(_world_text(self.env.get("distributed") or {}))),
            (
                "Libraries",
                _public(", ".join(f"{k} {v}" for k, v in sorted(libraries.items())) if libraries else None),
            ),
        ]
        return [(label, _cell(value)) for label, value in rows]

    def splits_table(self) -> list[tuple[str, str, str]]:
        splits = self.splits.get("splits") or {}
        return [
            (name, _public(splits[name].get("count")), _public(splits[name].get("root")))
            for name in ("train", "val", "test")
            if isinstance(splits.get(name), dict)
        ]

    def quantization(self) -> str:
        quant = _get(self.config, "lora", "quantization")
        if quant is None:
            return f"4-bit quantization: {NOT_RECORDED}."
        if quant == "4bit":
            return (
                "4-bit quantization: **yes** (QLoRA: the base model was loaded in 4 bits with "
                "bitsandbytes; load it the same way for matching results)."
            )
        return "4-bit quantization: **no** (the base model was loaded unquantized)."


def is_local_path(text: str) -> bool:
    """True when `text` holds something that looks like a local filesystem path."""
    return bool(_LOCAL_PATH.search(text))


def _hub_dataset(dataset: dict[str, Any]) -> str | None:
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
        # "train/val/test 0.8/0.1/0.1": a " / " separator reads as a local path to _public and was withheld
        names = [k for k in ("train", "val", "test") if k in ratios]
        parts.append(f"{'/'.join(names)} {'/'.join(f'{ratios[k]:g}' for k in names)}")
    dedupe = splits.get("dedupe")
    if isinstance(dedupe, dict) and dedupe.get("mode"):
        parts.append(f"dedupe {dedupe['mode']}")
    return ", ".join(parts)


def _public(value: object) -> str:
    """The value as card text; a local path or a secret never gets through."""
    from bundler.bundle.scrub import find_secret

    if value is None or value == "":
        return NOT_RECORDED
    text = str(value)
    if find_secret(text):
        return "(withheld: looks like a secret)"
    if _LOCAL_PATH.search(text):
        return "(withheld: local path)"
    return text


def _world_text(world: dict[str, Any]) -> str:
    """World size, topology, backend and NCCL version of a run (env.json `distributed`)."""
    size = world.get("world_size", 1)
    if size == 1:
        return "1 process"
    nccl = f", NCCL {world['nccl']}" if world.get("nccl") else ""
    return f"world size {size} ({world.get('topology') or 'topology not recorded'}), {world.get('backend')}{nccl}"


def _code(value: object) -> str:
    text = _public(value)
    return text if text == NOT_RECORDED or text.startswith("(withheld") else f"`{text}`"


def _number(value: object) -> str:
    return f"{value:.6g}" if isinstance(value, (int, float)) else NOT_RECORDED


def _cell(text: str) -> str:
    """Escape a value for a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _files_summary(files: object) -> str:
    if not isinstance(files, dict) or not files:
        return NOT_RECORDED
    if len(files) == 1:
        ((name, sha),) = files.items()
        return f"`{sha}` ({_public(name)})"
    listing = "; ".join(f"{_public(name)} `{sha[:16]}`" for name, sha in sorted(files.items()))
    return f"{len(files)} files: {listing}"


def _get(config: dict[str, Any], section: str, key: str) -> Any:
    value = config.get(section)
    return value.get(key) if isinstance(value, dict) else None


def _bag_info(bundle_dir: Path) -> dict[str, str]:
    from bundler.bundle.bag import read_bag_info

    return read_bag_info(bundle_dir)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}
