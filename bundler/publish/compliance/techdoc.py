"""EU AI Act technical documentation from a bundle: Annex IV section 2 and Annex XI sections 1-2, point by point."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bundler.publish.compliance.estimate import estimate_compute, estimate_energy
from bundler.publish.compliance.evidence import TO_COMPLETE, Evidence, Fact, as_map, llama_parameter_count


@dataclass(frozen=True)
class Section:
    """One point of an annex ("2(a)") with its heading and facts."""

    point: str
    title: str
    facts: tuple[Fact, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"point": self.point, "title": self.title, "facts": [f.as_dict() for f in self.facts]}


def to_complete(label: str) -> Fact:
    return Fact(label, TO_COMPLETE, (), "to-complete")


def architecture(ev: Evidence) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The base model's shape and the files it was read from ({} when the bundle lacks it).

    Runs record it in results.json; older runs of the tiny model have it in model.json only.
    """
    recorded = ev.results.get("architecture")
    if isinstance(recorded, dict) and recorded:
        return recorded, (ev.run_file("results.json"),)
    for key in ("tiny", "config", "architecture"):
        if isinstance(ev.model.get(key), dict):
            return ev.model[key], (ev.recipe("model.json"),)
    return {}, ()


def base_parameters(ev: Evidence) -> Fact:
    recorded = as_map(ev.results.get("parameters")).get("base")
    if isinstance(recorded, int):
        return ev.fact("Base model parameters (counted at run time)", recorded, ev.run_file("results.json"))
    arch, paths = architecture(ev)
    count = llama_parameter_count(arch)
    label = "Base model parameters (computed from the recorded architecture, Llama-shaped)"
    return ev.fact(label, count, *paths)


def adapter_facts(ev: Evidence) -> list[Fact]:
    lora = as_map(ev.config.get("lora"))
    cfg = ev.recipe("config.toml")
    return [
        ev.fact("Modification method", "LoRA (low-rank adapters; the base weights stay frozen)", cfg),
        ev.fact("LoRA rank r / alpha / dropout", _join(lora.get("r"), lora.get("alpha"), lora.get("dropout")), cfg),
        ev.fact("Adapted modules", ", ".join(lora.get("target_modules") or []), cfg),
        ev.fact("Base model quantization during training", lora.get("quantization"), cfg),
        ev.fact(
            "Adapter parameters (trainable)",
            ev.adapter_parameters(),
            ev.run_file("adapter/adapter_model.safetensors"),
        ),
        ev.fact("Adapter sha256", ev.results.get("adapter_sha256"), ev.run_file("results.json")),
    ]


def base_model_facts(ev: Evidence) -> list[Fact]:
    model = ev.recipe("model.json")
    files = as_map(ev.model.get("files"))
    return [
        ev.fact("Third-party base model", ev.model.get("upstream_id") or ev.model.get("id"), model),
        ev.fact("Base model source", ev.model.get("source"), model),
        ev.fact("Base model revision", ev.model.get("revision"), model),
        ev.fact("Base model files (sha256)", {k: files[k] for k in sorted(files)}, model),
        base_parameters(ev),
    ]


def training_facts(ev: Evidence) -> list[Fact]:
    train = as_map(ev.config.get("train"))
    cfg, results = ev.recipe("config.toml"), ev.run_file("results.json")
    keys = ("learning_rate", "scheduler", "warmup_steps", "max_steps", "batch_size", "grad_accum", "max_seq_len")
    return [
        ev.fact("Training objective", "causal language modelling" + _response_only(train), cfg),
        ev.fact("Hyperparameters", {k: train.get(k) for k in keys if k in train}, cfg),
        ev.fact("Seeds", {k: v for k, v in ev.view.seeds().items() if v is not None}, cfg),
        ev.fact("Deterministic mode", train.get("deterministic"), cfg),
        ev.fact("Steps trained", ev.results.get("steps"), results),
        ev.fact("Tokens trained", ev.results.get("tokens"), results),
        ev.fact("Code commit", ev.source.get("commit"), ev.recipe("source.json")),
        ev.fact("Code archive", "data/recipe/code.tar", ev.recipe("code.tar")),
    ]


def software_facts(ev: Evidence) -> list[Fact]:
    env, lock = ev.run_file("env.json"), ev.recipe("requirements.lock")
    libraries = as_map(ev.env.get("libraries"))
    return [
        ev.fact("Libraries at run time", {k: libraries[k] for k in sorted(libraries)}, env),
        ev.fact("Python", ev.env.get("python"), env),
        ev.fact("Locked packages", {p.name: p.version for p in ev.pins}, lock),
        ev.fact("Base image", ev.image.get("reference"), ev.recipe("image.lock.json")),
        ev.fact("Base image digest", ev.image.get("digest"), ev.recipe("image.lock.json")),
        ev.fact("Runner", ev.run.get("runner"), ev.run_file("run.json")),
        ev.fact("Bundle written by", ev.bag_info.get("Bag-Software-Agent"), "bag-info.txt"),
        hardware_fact(ev),
    ]


def hardware_fact(ev: Evidence) -> Fact:
    gpu, cpu = as_map(ev.env.get("gpu")), as_map(ev.env.get("cpu"))
    if gpu:
        text = f"{gpu.get('count', 1)} x {gpu.get('name')}"
    elif cpu:
        text = f"CPU {cpu.get('name')} ({cpu.get('threads')} threads), no GPU"
    else:
        text = None
    return ev.fact("Hardware", text, ev.run_file("env.json"))


def compute_facts(ev: Evidence) -> list[Fact]:
    arch, arch_paths = architecture(ev)
    base = base_parameters(ev)
    compute = estimate_compute(
        ev.results.get("tokens"),
        base.value if isinstance(base.value, int) else None,
        ev.adapter_parameters(),
        arch,
        as_map(ev.config.get("train")).get("max_seq_len"),
    )
    sources = (ev.run_file("results.json"), ev.recipe("config.toml"), *arch_paths)
    value = (
        {
            "flops": float(f"{compute.flops:.4g}"),
            "formula": compute.formula,
            "inputs": compute.inputs,
            "terms": compute.terms,
        }
        if compute.flops is not None
        else None
    )
    energy = estimate_energy(ev.env, ev.results.get("train_seconds"), ev.results.get("world_size"))
    energy_value = {
        "kwh": energy.kwh,
        "formula": energy.formula,
        "inputs": energy.inputs,
        "assumption": energy.assumption,
    }
    energy_fact = (
        ev.fact("Energy (estimated)", energy_value, ev.run_file("results.json"), ev.run_file("env.json"))
        if energy.kwh is not None
        else Fact("Energy (estimated)", f"not estimated: {energy.reason}", (), "missing")
    )
    return [
        ev.fact("Training time (seconds, recorded)", ev.results.get("train_seconds"), ev.run_file("results.json")),
        ev.fact("Wall time of the run (seconds)", ev.run.get("wall_seconds"), ev.run_file("run.json")),
        ev.fact("Training compute (estimated FLOPs)", value, *sources),
        energy_fact,
        hardware_fact(ev),
    ]


def validation_facts(ev: Evidence, signatures: list[Fact], checks: list[Fact]) -> list[Fact]:
    splits = as_map(ev.splits.get("splits"))
    results, metrics = ev.run_file("results.json"), ev.run_file("metrics.jsonl")
    eval_lines = [m for m in ev.metrics if "eval_loss" in m]
    return [
        ev.fact(
            "Validation and test data",
            {
                k: {"examples": v.get("count"), "root_sha256": v.get("root")}
                for k, v in sorted(splits.items())
                if k != "train"
            },
            ev.recipe("splits.json"),
        ),
        ev.fact("Evaluation metrics (test split unless named)", ev.results.get("eval"), results),
        ev.fact(
            "Validation loss during training",
            [{"step": m.get("step"), "loss": m.get("eval_loss")} for m in eval_lines],
            metrics,
        ),
        ev.fact("Test log date (run finished, UTC)", ev.run.get("finished"), ev.run_file("run.json")),
        ev.fact("Test logs", "per-step metrics.jsonl and results.json of this run", metrics, results),
        *checks,
        *signatures,
    ]


def annex_iv(ev: Evidence, data: list[Fact], signatures: list[Fact], checks: list[Fact]) -> list[Section]:
    """Annex IV point 2 (technical documentation of a high-risk AI system)."""
    return [
        Section("1", "General description", (to_complete("Intended purpose"), to_complete("Provider"))),
        Section(
            "2(a)",
            "Development methods and steps, including third-party pretrained models and how they were modified",
            (*base_model_facts(ev), *adapter_facts(ev), *training_facts(ev)),
        ),
        Section("2(b)", "Design specifications and key choices", (to_complete("Design rationale and assumptions"),)),
        Section("2(c)", "System architecture and software versions", tuple(software_facts(ev))),
        Section("2(d)", "Data requirements and datasheets: provenance, selection, cleaning, splits", tuple(data)),
        Section("2(e)", "Human oversight measures", (to_complete("Human oversight measures"),)),
        Section("2(f)", "Pre-determined changes", (to_complete("Pre-determined changes"),)),
        Section(
            "2(g)",
            "Validation and testing: data, metrics, dated and signed test logs",
            tuple(validation_facts(ev, signatures, checks)),
        ),
        Section("2(h)", "Cybersecurity measures", (to_complete("Cybersecurity measures"),)),
        Section(
            "3-9",
            "Monitoring, risk management, standards, declaration of conformity",
            (to_complete("Risk management system (Article 9)"),),
        ),
    ]


def annex_xi(ev: Evidence, data: list[Fact]) -> list[Section]:
    """Annex XI sections 1 and 2 (technical documentation of a general-purpose AI model)."""
    arch, arch_paths = architecture(ev)
    cfg = ev.recipe("config.toml")
    distribution = ev.publish.get("repo_id") or ev.publish.get("repo")
    return [
        Section(
            "1(a-c)",
            "General description: tasks, acceptable use, release and distribution",
            (
                to_complete("Tasks the model is intended to perform"),
                to_complete("Acceptable use policy"),
                ev.fact("Distribution (Hub repository)", distribution, ev.run_file("publish.json"))
                if distribution
                else to_complete("Date of release and methods of distribution"),
            ),
        ),
        Section(
            "1(d)",
            "Architecture and number of parameters",
            (
                ev.fact("Base architecture", {k: arch[k] for k in sorted(arch) if k != "seed"}, *arch_paths),
                base_parameters(ev),
                ev.fact(
                    "Adapter parameters (trainable)",
                    ev.adapter_parameters(),
                    ev.run_file("adapter/adapter_model.safetensors"),
                ),
            ),
        ),
        Section(
            "1(e)",
            "Modality and format of inputs and outputs",
            (
                ev.fact("Modality", "text in, text out", cfg),
                ev.fact("Prompt template", as_map(ev.config.get("data")).get("prompt_template"), cfg),
                ev.fact(
                    "Adapter format",
                    "PEFT LoRA adapter: adapter_model.safetensors + adapter_config.json",
                    ev.run_file("adapter/adapter_config.json"),
                ),
            ),
        ),
        Section("1(f)", "Licence", (ev.fact("Licence", as_map(ev.config.get("publish")).get("license"), cfg),)),
        Section("2(a)", "Integration into AI systems", (to_complete("Technical means for integration"),)),
        Section("2(b)", "Training methodology and techniques", (*adapter_facts(ev), *training_facts(ev))),
        Section("2(c)", "Data used for training, testing and validation", tuple(data)),
        Section("2(d-e)", "Computational resources, training time and energy", tuple(compute_facts(ev))),
    ]


def _join(*values: Any) -> str | None:
    return None if all(v is None for v in values) else " / ".join(str(v) for v in values)


def _response_only(train: dict[str, Any]) -> str:
    return " on the response tokens only" if train.get("loss_on_response_only") else ""
