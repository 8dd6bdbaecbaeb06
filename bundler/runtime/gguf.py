"""`python -m runtime.gguf <file.gguf> <out_dir>`: a GGUF checkpoint -> a safetensors model folder.

Runs in the locked environment, so the conversion belongs to the locked transformers. It loads the file
with `from_pretrained(dir, gguf_file=...)` (dequantized to float32 through the `gguf` package), repairs
what transformers is known to get wrong, saves, reads the result back, and prints one line
`BUNDLER_EVENT {"event": "converted", ...}` with what it did; bad input prints `BUNDLER_ERROR {...}` and
exits 3. The traps it handles (seen with SmolLM2-135M-Instruct, issue 18):

- transformers 5.x refuses `save_pretrained` on a model loaded from GGUF ("quantized with gguf and is not
  serializable") until the quantizer marker is gone from the model and its config;
- transformers 4.57 converts SmolLM2's tokenizer with eos `<|im_start|>`, no pad token and a BOS added;
  the GGUF's own metadata says eos = pad = `<|im_end|>` (id 2) and no BOS, and that metadata wins here;
- a folder saved by 5.x keeps rope theta only under `rope_parameters`; 4.57 does not read that key and
  silently uses 10000 instead of 100000, so the top-level `rope_theta` is written too and checked;
- a folder saved by 5.x names its tokenizer class `TokenizersBackend`, which 4.57 cannot load.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from .contract import ERROR_PREFIX, EVENT_PREFIX
from .errors import EXIT_INPUT, RecipeInputError

CONVERSION_SCHEMA = "bundler.gguf-conversion/1"
CONVERSION_RECORD = "conversion.json"  # beside the converted files; not one of them


def read_metadata(path: Path) -> dict[str, Any]:
    """The GGUF keys the conversion checks against: architecture, rope theta, special tokens, BOS."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def value(key: str) -> Any:
        field = reader.fields.get(key)
        return None if field is None else field.contents()

    arch = value("general.architecture")
    tokens = reader.fields.get("tokenizer.ggml.tokens")

    def token(key: str) -> str | None:
        index = value(key)
        return None if index is None or tokens is None else str(tokens.contents(int(index)))

    return {
        "architecture": arch,
        "name": value("general.name"),
        "rope_theta": value(f"{arch}.rope.freq_base"),
        "bos_token": token("tokenizer.ggml.bos_token_id"),
        "eos_token": token("tokenizer.ggml.eos_token_id"),
        "pad_token": token("tokenizer.ggml.padding_token_id"),
        "add_bos_token": value("tokenizer.ggml.add_bos_token"),
    }


def check_architecture(arch: str | None) -> None:
    """Refuse an architecture the locked transformers cannot load from GGUF, naming the ones it can."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    supported = sorted(a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in {"general", "tokenizer"})
    if arch not in supported:
        import transformers

        raise RecipeInputError(
            f"the GGUF file's architecture {arch!r} cannot be loaded from GGUF by transformers "
            f"{transformers.__version__} (it can: {', '.join(supported)})",
            "use a GGUF checkpoint of a supported architecture, or a transformers version that supports it",
            kind="gguf-architecture",
        )


def drop_quantizer_marker(model: Any) -> bool:
    """Remove the GGUF quantizer marker (transformers 5.x refuses to save otherwise); True if one was there."""
    found = getattr(model, "hf_quantizer", None) is not None or hasattr(model.config, "quantization_config")
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return found


def adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts its BOS in front of encoded text by itself."""
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return tokenizer.bos_token_id is not None and ids[:1] == [tokenizer.bos_token_id]


def fix_tokenizer(tokenizer: Any, model: Any, meta: dict[str, Any]) -> list[str]:
    """Make eos, pad and BOS-adding match the GGUF's metadata; return what was changed."""
    fixes = []
    for role in ("eos", "pad"):
        wanted = meta.get(f"{role}_token")
        have = getattr(tokenizer, f"{role}_token")
        if wanted is not None and have != wanted:
            setattr(tokenizer, f"{role}_token", wanted)
            fixes.append(f"tokenizer {role}_token {have!r} -> {wanted!r} (GGUF tokenizer.ggml metadata)")
        if wanted is not None:
            token_id = tokenizer.convert_tokens_to_ids(wanted)
            for config in (model.config, getattr(model, "generation_config", None)):
                if config is not None and getattr(config, f"{role}_token_id", None) != token_id:
                    setattr(config, f"{role}_token_id", token_id)
    if meta.get("add_bos_token") is False and adds_bos(tokenizer):
        tokenizer.add_bos_token = False  # fast tokenizers rebuild their post-processor from this
        if adds_bos(tokenizer):
            from tokenizers import processors

            tokenizer.backend_tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
        fixes.append("tokenizer no longer adds a BOS (GGUF tokenizer.ggml.add_bos_token = false)")
    if meta.get("add_bos_token") is False and adds_bos(tokenizer):
        raise RecipeInputError(
            "the converted tokenizer still adds a BOS the GGUF says it must not",
            "report this with the transformers version; the conversion cannot be trusted",
            kind="gguf-tokenizer",
        )
    return fixes


def effective_rope_theta(config: dict[str, Any]) -> float | None:
    """Rope theta as a loader reads it: top-level `rope_theta` (4.x), else `rope_parameters` (5.x)."""
    if "rope_theta" in config:
        return float(config["rope_theta"])
    parameters = config.get("rope_parameters") or {}
    return float(parameters["rope_theta"]) if "rope_theta" in parameters else None


def pin_rope_theta(folder: Path, expected: float | None) -> list[str]:
    """Write top-level rope_theta into config.json when only rope_parameters has it; check it afterwards."""
    if expected is None:
        return []
    path = folder / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    fixes = []
    nested = (config.get("rope_parameters") or {}).get("rope_theta")
    if "rope_theta" not in config:
        # transformers 4.57 ignores rope_parameters and would default to 10000.
        config["rope_theta"] = float(nested if nested is not None else expected)
        path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        fixes.append(f"config.json: top-level rope_theta = {config['rope_theta']:g} (4.x reads only that key)")
    for where, got in (("rope_theta", config.get("rope_theta")), ("rope_parameters.rope_theta", nested)):
        if got is not None and float(got) != float(expected):
            raise RecipeInputError(
                f"config.json {where} = {got} after conversion, the GGUF says {expected}",
                "the conversion cannot be trusted with this transformers version",
                kind="gguf-rope",
            )
    return fixes


def pin_tokenizer_class(folder: Path) -> list[str]:
    """Name a tokenizer class every transformers version has: 5.x saves "TokenizersBackend", which 4.x
    cannot load ("does not exist or is not currently imported"); PreTrainedTokenizerFast reads
    tokenizer.json as it is in both (checked with 4.57.6 and 5.24.0: same ids, same special tokens)."""
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    if config.get("tokenizer_class") != "TokenizersBackend":
        return []
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return ["tokenizer_config.json: tokenizer_class TokenizersBackend -> PreTrainedTokenizerFast (absent in 4.x)"]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def convert(gguf_path: Path, out: Path) -> dict[str, Any]:
    """Convert `gguf_path` into `out` (atomically); return the conversion record."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    meta = read_metadata(gguf_path)
    check_architecture(meta["architecture"])
    folder, name = gguf_path.parent, gguf_path.name
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    fixes = []
    if drop_quantizer_marker(model):
        fixes.append("removed the GGUF quantizer marker from the model and its config (5.x refuses to save otherwise)")
    fixes += fix_tokenizer(tokenizer, model, meta)

    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    fixes += pin_rope_theta(tmp, meta["rope_theta"])
    fixes += pin_tokenizer_class(tmp)

    # Read the folder back the way training will, and check that it is the model that was converted.
    reloaded = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32, local_files_only=True)
    theta = effective_rope_theta(AutoConfig.from_pretrained(tmp, local_files_only=True).to_dict())
    probe = torch.tensor([tokenizer("The quick brown fox", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        same = torch.equal(model(probe).logits, reloaded(probe).logits)
    if not same or (meta["rope_theta"] is not None and theta != float(meta["rope_theta"])):
        raise RecipeInputError(
            f"the converted folder does not reproduce the GGUF model (same logits: {same}, rope theta {theta})",
            "the conversion cannot be trusted with this transformers version",
            kind="gguf-readback",
        )
    reloaded_tokenizer = AutoTokenizer.from_pretrained(tmp, local_files_only=True)
    specials = {
        "bos_token": reloaded_tokenizer.bos_token,
        "eos_token": reloaded_tokenizer.eos_token,
        "eos_token_id": reloaded_tokenizer.eos_token_id,
        "pad_token": reloaded_tokenizer.pad_token,
        "pad_token_id": reloaded_tokenizer.pad_token_id,
        "adds_bos": adds_bos(reloaded_tokenizer),
    }
    files = {p.name: sha256_of(p) for p in sorted(tmp.iterdir()) if p.is_file()}
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return {
        "schema": CONVERSION_SCHEMA,
        "libraries": {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "gguf": _version("gguf"),
            "tokenizers": _version("tokenizers"),
            "safetensors": _version("safetensors"),
        },
        "gguf_metadata": meta,
        "dtype": "float32",
        "fixes": fixes,
        "checks": {
            "rope_theta": theta,
            "reload_logits_identical": same,
            "tokenizer": specials,
        },
        "files": files,
    }


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m runtime.gguf <file.gguf> <out_dir>", file=sys.stderr)
        return 2
    try:
        record = convert(Path(argv[0]), Path(argv[1]))
    except RecipeInputError as error:
        print(ERROR_PREFIX + json.dumps(error.as_event(), sort_keys=True), flush=True)
        return EXIT_INPUT
    print(EVENT_PREFIX + json.dumps({"event": "converted", **record}, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
