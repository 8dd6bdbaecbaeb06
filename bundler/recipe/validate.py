"""Check the inputs of a build against each other before any split, install or training.

bundle.toml is already valid on its own (config.py); here the data is checked against the config
(every template field exists, responses survive max_seq_len), LoRA against the model's layer widths,
the model against the machine's memory, and the dataset for secrets. Every problem is reported at once.
Nothing here imports torch: token counts come from the `tokenizers` library or, for a model without
tokenizer files, from UTF-8 bytes, exactly as runtime/data.py's ByteTokenizer counts them.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bundler import hub
from bundler.bundle.scrub import SecretFinding, scan_file, secret_values
from bundler.errors import BundlerError, DataSecretError, InputProblemsError
from bundler.recipe.config import BundleConfig, template_fields
from bundler.recipe.datasource import DatasetFiles, find_dataset_files
from bundler.text import check_utf8_file

SHOWN = 8  # example IDs named per problem; the count says how many more
# Llama-shaped families whose projection names and widths follow from config.json alone.
_LLAMA_FAMILY = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "olmo", "olmo2", "granite", "tiny"}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")  # runtime/data.py


@dataclass
class InputReport:
    """What the checks found that does not stop the build: warnings to print, dataset secrets allowed."""

    warnings: list[str] = field(default_factory=list)
    data_secrets: list[SecretFinding] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    model_checked: bool = False
    responses_checked: bool = False


def check_inputs(
    config: BundleConfig,
    project: Path,
    *,
    model_dir: Path | None = None,
    scan_data: bool = True,
    allow_secrets_in_data: bool = False,
) -> InputReport:
    """Run every check; raise InputProblemsError listing all problems, or DataSecretError; else the report."""
    report = InputReport()
    problems: list[str] = []
    found: DatasetFiles | None = None
    unreadable: BundlerError | None = None
    try:
        found = find_dataset_files(config, project)
        report.rows = read_rows(found, problems)
    except BundlerError as exc:  # no data to check against; still report the model's problems with it
        unreadable = exc
    model_config = model_shape(config, project, model_dir)
    if model_config is not None:
        problems += check_model(config, model_config)
        report.model_checked = True
    if unreadable is not None:
        if not problems:
            raise unreadable  # alone, it keeps its own next step
        problems.append(str(unreadable))
    if report.rows:
        problems += check_fields(config, report.rows)
        if not problems:  # token counts need every field present
            counter = token_counter(config, project, model_dir)
            if counter is None:
                report.warnings.append(
                    "the model's tokenizer is not at hand yet: response lengths are checked once it is fetched"
                )
            else:
                problems += check_responses(config, report.rows, counter, report.warnings)
                report.responses_checked = True
    if problems:
        raise InputProblemsError(problems)
    if scan_data and found is not None:
        report.data_secrets = scan_dataset(found)
        if report.data_secrets and not allow_secrets_in_data:
            raise DataSecretError([str(f) for f in report.data_secrets])
    return report


def check_with_model(config: BundleConfig, project: Path, model_dir: Path, report: InputReport) -> None:
    """The checks that waited for the model's files (a Hub model not yet cached): widths, memory, token counts."""
    problems: list[str] = []
    if not report.model_checked and (shape := model_shape(config, project, model_dir)) is not None:
        problems += check_model(config, shape)
    counter = None if report.responses_checked else token_counter(config, project, model_dir)
    if report.rows and counter is not None:
        problems += check_responses(config, report.rows, counter, report.warnings)
    if problems:
        raise InputProblemsError(problems)


# ---------------------------------------------------------------- the data


def read_rows(found: DatasetFiles, problems: list[str]) -> list[dict[str, Any]]:
    """Read every row as the runtime will (json.loads per JSONL line, csv.DictReader); bad rows become problems."""

    rows: list[dict[str, Any]] = []
    for name in sorted(found.files):
        path, label = found.files[name], found.data_dir / name
        if found.format == "parquet":
            try:
                import pyarrow.parquet as pq
            except ImportError:
                return []  # the split reads it with `datasets`; the field checks then run in the runtime
            rows += pq.read_table(path).to_pylist()
            continue
        check_utf8_file(path, label=label)
        with open(path, encoding="utf-8-sig", newline="" if found.format == "csv" else None) as stream:
            if found.format == "csv":
                rows += list(csv.DictReader(stream))
                continue
            for number, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    problems.append(f"{label} line {number}: not a JSON object ({exc.args[0].split(':')[0]})")
                    continue
                if not isinstance(row, dict):
                    problems.append(f"{label} line {number}: a JSON {type(row).__name__}, not an object")
                    continue
                rows.append(row)
    return rows


def example_id(row: dict[str, Any], id_field: str | None) -> str:
    """The example's ID as splits.json and the runtime name it (runtime/data.py's content_hash without an ID)."""
    if id_field is not None and id_field in row:
        return str(row[id_field])
    text = json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _named(ids: list[str]) -> str:
    shown = ", ".join(ids[:SHOWN])
    return shown + (f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else "")


def check_fields(config: BundleConfig, rows: list[dict[str, Any]]) -> list[str]:
    """Every field the config or the prompt template names must exist in every example."""
    data = config.data
    needed = {
        "data.prompt_field": data.prompt_field,
        "data.response_field": data.response_field,
        "data.id_field": data.id_field,
        "data.label_field": data.label_field,
        "data.date_field": data.date_field,
    }
    for name in sorted(template_fields(data.prompt_template) - {"prompt"}):
        needed[f"data.prompt_template {{{name}}}"] = name
    problems = []
    columns = sorted({key for row in rows[:1000] for key in row})
    for source, column in needed.items():
        if column is None:
            continue
        lacking = [example_id(row, data.id_field) for row in rows if column not in row]
        if lacking:
            every = f"{len(lacking)} of {len(rows)} examples lack"
            every = "every example lacks" if len(lacking) == len(rows) else every
            problems.append(
                f"{source} names field {column!r}, which {every} ({_named(lacking)}); "
                f"the data has: {', '.join(columns)}"
            )
    return problems


# ---------------------------------------------------------------- token counts


class ByteCounter:
    """runtime/data.py's ByteTokenizer: one token per UTF-8 byte, a BOS before the prompt."""

    bos = 1

    def count(self, text: str) -> int:
        return len(text.encode("utf-8"))


class TokenizersCounter:
    """The model's tokenizer.json through `tokenizers` (what AutoTokenizer's fast tokenizers run), no torch."""

    def __init__(self, model_dir: Path) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        # As runtime/data.py's HFTokenizer: a BOS only when the tokenizer itself puts one in front
        # (SmolLM2 names <|im_start|> as its BOS but never adds it).
        bos = _bos_token(model_dir, self.tokenizer)
        self.bos = 1 if bos is not None and self.tokenizer.encode("a").ids[:1] == [bos] else 0

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)


def _bos_token(model_dir: Path, tokenizer: Any) -> int | None:
    path = model_dir / "tokenizer_config.json"
    try:
        bos = json.loads(path.read_text(encoding="utf-8")).get("bos_token") if path.is_file() else None
    except ValueError:
        return None
    if isinstance(bos, dict):
        bos = bos.get("content")
    return tokenizer.token_to_id(bos) if isinstance(bos, str) else None


Counter = ByteCounter | TokenizersCounter


def token_counter(config: BundleConfig, project: Path, model_dir: Path | None) -> Counter | None:
    """How the runtime will count tokens: the model's tokenizer if it ships one, else bytes; None if unknown yet."""
    directory = model_dir or _known_model_dir(config, project)
    if directory is None:
        return ByteCounter() if config.model.source == "tiny" else None
    if not any((directory / name).is_file() for name in _TOKENIZER_FILES):
        return ByteCounter()
    if (directory / "tokenizer.json").is_file():
        return TokenizersCounter(directory)
    return None  # a slow (sentencepiece-only) tokenizer: counted by the runtime, not here


def check_responses(
    config: BundleConfig, rows: list[dict[str, Any]], counter: Counter, warnings: list[str]
) -> list[str]:
    """Name the examples whose response max_seq_len cuts away entirely; refuse when that is every example.

    runtime/data.py's encode() keeps (BOS + prompt + response + EOS)[:max_seq_len]: a response survives
    when the prompt leaves room for at least one of its tokens.
    """
    data, max_len = config.data, config.train.max_seq_len
    lost: list[str] = []
    longest_prompt = 0
    for row in rows:
        fields = {**row, "prompt": row[data.prompt_field]}
        try:
            prompt = data.prompt_template.format(**fields)
        except (KeyError, IndexError, AttributeError, ValueError) as exc:
            return [f"data.prompt_template cannot be filled from example {example_id(row, data.id_field)}: {exc!r}"]
        prompt_tokens = counter.bos + counter.count(prompt)
        longest_prompt = max(longest_prompt, prompt_tokens)
        if prompt_tokens >= max_len:
            lost.append(example_id(row, data.id_field))
    if not lost:
        return []
    if len(lost) == len(rows):
        return [
            f"train.max_seq_len = {max_len} leaves no room for any response: every prompt (with the template) "
            f"takes {max_len} tokens or more (the longest {longest_prompt}); raise train.max_seq_len above "
            f"{longest_prompt}, or shorten data.prompt_template"
        ]
    warnings.append(
        f"{len(lost)} of {len(rows)} example(s) lose their whole response to train.max_seq_len = {max_len}: "
        f"{_named(lost)} (they train on the prompt only); raise train.max_seq_len to keep them"
    )
    return []


# ---------------------------------------------------------------- the model


def _known_model_dir(config: BundleConfig, project: Path) -> Path | None:
    model = config.model
    if model.source == "local" and model.path:
        return (project / model.path).resolve()
    if model.source == "hub":
        try:
            record = json.loads((project / "model.lock.json").read_text(encoding="utf-8"))
            cached = hub.snapshot_dir(record["id"], "model", record["commit"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return cached if (cached / "config.json").is_file() else None
    return None


def model_shape(config: BundleConfig, project: Path, model_dir: Path | None) -> dict[str, Any] | None:
    """The model's config.json (the tiny model's, made from [model.tiny]); None while it is not at hand."""
    if config.model.source == "tiny" and model_dir is None:
        tiny = config.model.tiny
        return {"model_type": "tiny", **tiny.model_dump()}
    directory = model_dir or _known_model_dir(config, project)
    if directory is None or not (directory / "config.json").is_file():
        return None
    try:
        shape = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except ValueError:
        return None
    weights = sum(p.stat().st_size for p in directory.glob("*") if p.suffix in (".safetensors", ".bin"))
    return {**shape, "_weight_bytes": weights} if isinstance(shape, dict) else None


def layer_widths(shape: dict[str, Any]) -> dict[str, tuple[int, int]] | None:
    """(in, out) features of each projection a LoRA can target, for Llama-shaped models; None otherwise."""
    if shape.get("model_type") not in _LLAMA_FAMILY:
        return None
    hidden, inter, heads = shape.get("hidden_size"), shape.get("intermediate_size"), shape.get("num_attention_heads")
    if not all(isinstance(v, int) and v > 0 for v in (hidden, inter, heads)):
        return None
    kv = shape.get("num_key_value_heads") or heads
    head_dim = shape.get("head_dim") or hidden // heads
    return {
        "q_proj": (hidden, heads * head_dim),
        "k_proj": (hidden, kv * head_dim),
        "v_proj": (hidden, kv * head_dim),
        "o_proj": (heads * head_dim, hidden),
        "gate_proj": (hidden, inter),
        "up_proj": (hidden, inter),
        "down_proj": (inter, hidden),
    }


def check_model(config: BundleConfig, shape: dict[str, Any]) -> list[str]:
    """lora.r against the smallest targeted layer; target names against the model; memory against the machine."""
    problems = []
    widths = layer_widths(shape)
    targets = config.lora.target_modules
    if widths is not None and not any(set(t) & set("*.^$[]()|") for t in targets):
        chosen = list(widths) if targets == ["all-linear"] else targets
        unknown = [t for t in chosen if t not in widths]
        if unknown:
            problems.append(
                f"lora.target_modules names {', '.join(map(repr, unknown))}, which this model does not have; "
                f"it has {', '.join(widths)}"
            )
        sized = {t: min(widths[t]) for t in chosen if t in widths}
        if sized:
            name = min(sized, key=lambda t: sized[t])
            if config.lora.r > sized[name]:
                problems.append(
                    f"lora.r = {config.lora.r} exceeds the width of the smallest targeted layer ({name}: "
                    f"{widths[name][0]} -> {widths[name][1]}); lora.r must be in [1, {sized[name]}]"
                )
    problems += check_memory(config, shape)
    return problems


def machine_memory() -> int:
    """Physical memory in bytes (0 when the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def check_memory(config: BundleConfig, shape: dict[str, Any]) -> list[str]:
    """A model whose float32 weights alone exceed this machine's memory is a problem naming the knob to lower."""
    total = machine_memory()
    if not total:
        return []
    if shape.get("model_type") == "tiny":
        tiny = config.model.tiny
        h, i, layers = tiny.hidden_size, tiny.intermediate_size, tiny.num_hidden_layers
        kv = h // tiny.num_attention_heads * tiny.num_key_value_heads
        terms = {
            "model.tiny.vocab_size": 2 * tiny.vocab_size * h,  # embeddings and the untied lm_head
            "model.tiny.hidden_size": layers * (2 * h * h + 2 * h * kv),  # attention projections
            "model.tiny.intermediate_size": layers * 3 * h * i,  # MLP
        }
        need = 4 * sum(terms.values())
        knob = max(terms, key=lambda k: terms[k])
        knobs = [knob, "model.tiny.num_hidden_layers"] if knob != "model.tiny.vocab_size" else [knob]
    else:
        need = int(shape.get("_weight_bytes") or 0)
        knobs = ["[model] id (a smaller model)", "lora.quantization = '4bit'"]
    if need > total:
        return [
            f"the base model needs about {need / 2**30:,.1f} GiB for its weights alone and this machine has "
            f"{total / 2**30:,.1f} GiB of memory: lower {' or '.join(knobs)}"
        ]
    return []


# ---------------------------------------------------------------- secrets in the data


def scan_dataset(found: DatasetFiles) -> list[SecretFinding]:
    """Every token shape (and secret environment value) in the dataset files, each named by file and line."""
    values = secret_values()
    findings: list[SecretFinding] = []
    for name in sorted(found.files):
        findings += scan_file(found.files[name], name, values, first_only=False)
    return findings
