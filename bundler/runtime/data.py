"""Examples by split ID, prompt templating, tokenizers, and seeded batches (optionally packed)."""

from __future__ import annotations

import csv
import hashlib
import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import RecipeInputError
from .specs import DataSpec

IGNORE_INDEX = -100


def content_hash(record: dict[str, Any]) -> str:
    """An example's content hash (design section 9): sha256 of its canonical compact JSON."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def example_id(record: dict[str, Any], id_field: str | None) -> str:
    """An example's ID as splits.json names it: the id field's value, or its content hash."""
    return content_hash(record) if id_field is None else str(record.get(id_field))


def read_records(path: Path, fmt: str) -> list[dict[str, Any]]:
    """Read one dataset file as a list of records (JSONL, CSV, Parquet with pyarrow)."""
    if fmt == "auto":
        fmt = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}.get(path.suffix, "jsonl")
    if fmt == "jsonl":
        with open(path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    if fmt == "csv":
        with open(path, encoding="utf-8", newline="") as handle:
            return list(csv.DictReader(handle))
    if fmt == "parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise RecipeInputError(
                f"{path.name} is Parquet but pyarrow is not installed",
                "add pyarrow to requirements.in and run `bundler lock`",
            ) from None
        return pq.read_table(path).to_pylist()
    raise RecipeInputError(f"unknown dataset format {fmt!r}", "use jsonl, csv or parquet")


def load_splits(data_dir: Path, dataset: dict[str, Any], splits: dict[str, Any]) -> dict[str, list[dict]]:
    """Return {split: [records in sorted-ID order]}, checking every example's content hash."""
    id_field = splits.get("id_field")
    by_id: dict[str, dict[str, Any]] = {}
    for name in sorted(dataset["files"]):
        for record in read_records(data_dir / name, dataset.get("format", "auto")):
            key = example_id(record, id_field)
            by_id.setdefault(key, record)
    selected: dict[str, list[dict]] = {}
    for split, entry in sorted(splits["splits"].items()):
        missing = [i for i in entry["ids"] if i not in by_id]
        changed = [i for i in entry["ids"] if i in by_id and content_hash(by_id[i]) != entry["examples"].get(i)]
        if missing or changed:
            raise RecipeInputError(
                f"split {split!r}: {len(missing)} example(s) missing and {len(changed)} changed "
                "since the "
                f"split was made (first: {(missing + changed)[0]})",
                "mount the dataset the bundle recorded, or re-run `bundler split` and rebuild",
                kind="hash",
            )
        selected[split] = [by_id[i] for i in sorted(entry["ids"])]
    return selected


def template_fields(template: str) -> set[str]:
    return {name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(template) if name}


def check_fields(examples: dict[str, list[dict]], data: DataSpec) -> None:
    """Fail before training when any example lacks a field the template or config names."""
    needed = {data.prompt_field, data.response_field}
    needed |= template_fields(data.prompt_template) - {"prompt"}
    if data.label_field:
        needed.add(data.label_field)
    for split, records in examples.items():
        for index, record in enumerate(records):
            absent = sorted(needed - set(record))
            if absent:
                raise RecipeInputError(
                    f"{split} example {index} has no field {', '.join(map(repr, absent))} "
                    f"(it has {', '.join(sorted(record))})",
                    "fix [data] prompt_field/response_field/label_field or the {fields} in prompt_template",
                    kind="data",
                )


def render_prompt(record: dict[str, Any], data: DataSpec) -> str:
    fields = {**record, "prompt": record[data.prompt_field]}
    return data.prompt_template.format(**fields)


class ByteTokenizer:
    """Deterministic byte-level tokenizer for models shipped without one (the tiny model).

    Token i+4 is UTF-8 byte i; 0 pad, 1 bos, 2 eos, 3 unused. Vocabulary 260; the ids of bos/eos
    match LlamaConfig's defaults, so a tiny model needs no tokenizer files.
    """

    pad_token_id, bos_token_id, eos_token_id, offset = 0, 1, 2, 4
    vocab_size = 260
    name = "bytes+4"

    def encode(self, text: str, *, bos: bool) -> list[int]:
        ids = [b + self.offset for b in text.encode("utf-8")]
        return [self.bos_token_id, *ids] if bos else ids

    def decode(self, ids: list[int]) -> str:
        # A model's vocabulary may be larger than the tokenizer's (the tiny model has 512 ids):
        # ids past the byte range have no text.
        return bytes(i - self.offset for i in ids if self.offset <= i < self.offset + 256).decode("utf-8", "replace")


class HFTokenizer:
    """transformers' AutoTokenizer behind the same two-method interface as ByteTokenizer."""

    def __init__(self, model_dir: Path):
        from transformers import AutoTokenizer

        self._tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.eos_token_id = self._tok.eos_token_id
        self.bos_token_id = self._tok.bos_token_id
        self.pad_token_id = self._tok.pad_token_id if self._tok.pad_token_id is not None else self.eos_token_id
        self.vocab_size = len(self._tok)
        self.name = type(self._tok).__name__
        # A BOS goes in front only when the tokenizer itself would put it there: SmolLM2 names
        # <|im_start|> as its BOS but never adds it (GGUF tokenizer.ggml.add_bos_token = false), and a
        # prompt in its chat format already starts with one.
        probe = self._tok("a", add_special_tokens=True)["input_ids"]
        self.adds_bos = self.bos_token_id is not None and probe[:1] == [self.bos_token_id]

    def encode(self, text: str, *, bos: bool) -> list[int]:
        ids = self._tok(text, add_special_tokens=False)["input_ids"]
        return [self.bos_token_id, *ids] if bos and self.adds_bos else ids

    def decode(self, ids: list[int]) -> str:
        return str(self._tok.decode(ids, skip_special_tokens=True))


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")


def load_tokenizer(model_dir: Path) -> ByteTokenizer | HFTokenizer:
    if any((model_dir / name).is_file() for name in TOKENIZER_FILES):
        return HFTokenizer(model_dir)
    return ByteTokenizer()


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]


def encode(
    record: dict[str, Any],
    data: DataSpec,
    tokenizer: Any,
    max_len: int,
    response_only: bool,
    response: str | None = None,
) -> Encoded:
    """Prompt from the template, then the response and EOS; prompt labels masked when asked."""
    prompt_ids = tokenizer.encode(render_prompt(record, data), bos=True)
    text = str(record[data.response_field]) if response is None else response
    response_ids = [*tokenizer.encode(text, bos=False), tokenizer.eos_token_id]
    ids = (prompt_ids + response_ids)[:max_len]
    labels = ([IGNORE_INDEX] * len(prompt_ids) if response_only else list(prompt_ids)) + response_ids
    return Encoded(ids, labels[:max_len])


def collate(examples: list[Encoded], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest example; padding sits after every real token, so causal attention
    never sees it and no attention mask is needed (which keeps SDPA on the flash kernel)."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, e in enumerate(examples):
        ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
        labels[row, : len(e.labels)] = torch.tensor(e.labels)
    return ids, labels


