"""Read bundle.toml: parse, validate against the config models, and report every problem at once with its line.

Unknown keys get the nearest valid name (difflib, as pip-tools does), numbers out of range get the
range, and a value that looks like a secret is refused without being echoed.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import tomllib
from pydantic import BaseModel, ValidationError

from bundler.bundle.scrub import find_secret
from bundler.errors import ConfigError, ConfigProblem, InputError
from bundler.recipe.config import CONFIG_NAME, BundleConfig
from bundler.text import read_utf8


def _known_keys(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """Return the model class that owns the key at `loc` (for close-match suggestions)."""
    model: type[BaseModel] | None = BundleConfig
    for part in loc[:-1]:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return model


def _line_of(text: str, loc: tuple[Any, ...]) -> int | None:
    """Best-effort line number of a dotted key in TOML text."""
    keys = [k for k in loc if isinstance(k, str)]
    if not keys:
        return None
    section, key = (".".join(keys[:-1]), keys[-1]) if len(keys) > 1 else ("", keys[0])
    current = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        header = re.match(r"^\[([^\]]+)\]", line)
        if header:
            current = header.group(1).strip()
            if not section and current == key:
                return number
            continue
        if current == section and re.match(rf"^\"?{re.escape(key)}\"?\s*=", line):
            return number
    return None


_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number"}


def _field_at(loc: tuple[Any, ...]) -> Any:
    owner = _model_at(loc)
    if owner is None or not isinstance(loc[-1], str):
        return None
    return owner.model_fields.get(loc[-1])


def _is_float(loc: tuple[Any, ...]) -> bool:
    field = _field_at(loc)
    return field is not None and field.annotation in (float, float | None)


def _range_of(loc: tuple[Any, ...]) -> str | None:
    """The allowed range of the number at `loc`, written as an interval: `(0, 10]`, `[1, 10000000]`."""
    field = _field_at(loc)
    if field is None:
        return None
    low = high = None
    low_open = high_open = False
    for bound in field.metadata:
        if getattr(bound, "gt", None) is not None:
            low, low_open = bound.gt, True
        if getattr(bound, "ge", None) is not None:
            low = bound.ge
        if getattr(bound, "lt", None) is not None:
            high, high_open = bound.lt, True
        if getattr(bound, "le", None) is not None:
            high = bound.le
    if low is None and high is None:
        return None
    left = "(" if low_open or low is None else "["
    right = ")" if high_open or high is None else "]"
    return f"{left}{'-inf' if low is None else _number(low)}, {'inf' if high is None else _number(high)}{right}"


def _number(value: float) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return f"{value:,}" if value >= 10**6 else str(value)


def _problems_from(error: ValidationError, text: str, raw: dict[str, Any]) -> list[ConfigProblem]:
    problems = []
    for item in error.errors():
        loc = tuple(item["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            owner = _model_at(loc)
            message = "unknown key"
            if owner is not None:
                close = difflib.get_close_matches(str(loc[-1]), _known_keys(owner), n=1)
                if close:
                    message += f"; did you mean '{close[0]}'?"
        elif item["type"] == "missing":
            message = "required key is missing"
        elif item["type"] in _RANGE_ERRORS and (bounds := _range_of(loc)):
            kind = "a finite number" if _is_float(loc) else "a whole number"
            message = f"must be {kind} in {bounds}; got {item.get('input')!r}"
        elif item["type"] == "finite_number":
            message = f"must be a finite number (not inf or nan); got {item.get('input')!r}"
        else:
            message = item["msg"].removeprefix("Value error, ")
        problems.append(ConfigProblem(where, message, _line_of(text, loc)))
    return problems


def _secret_problems(raw: Any, text: str, loc: tuple[Any, ...] = ()) -> list[ConfigProblem]:
    found: list[ConfigProblem] = []
    if isinstance(raw, dict):
        for key, value in raw.items():
            found += _secret_problems(value, text, (*loc, key))
    elif isinstance(raw, list):
        for index, value in enumerate(raw):
            found += _secret_problems(value, text, (*loc, index))
    elif isinstance(raw, str):
        kind = find_secret(raw)
        if kind:
            where = ".".join(str(p) for p in loc)
            found.append(
                ConfigProblem(
                    where, f"looks like a secret ({kind}); pass it through the environment instead", _line_of(text, loc)
                )
            )
    return found


def parse_config(text: str, path: Path | str = CONFIG_NAME) -> BundleConfig:
    """Parse and validate bundle.toml text; raise ConfigError listing every problem."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = re.search(r"line (\d+)", str(exc))
        raise ConfigError(path, [ConfigProblem("TOML", str(exc), int(line.group(1)) if line else None)]) from None
    problems = _secret_problems(raw, text)
    try:
        config = BundleConfig.model_validate(raw)
    except ValidationError as exc:
        found = problems + _problems_from(exc, text, raw)
        raise ConfigError(path, sorted(found, key=lambda p: (p.line or 10**9, p.location))) from None
    if problems:
        raise ConfigError(path, problems)
    return config


def load_config(project: Path) -> BundleConfig:
    """Load <project>/bundle.toml (or the file given)."""
    path = project / CONFIG_NAME if project.is_dir() else project
    if not path.is_file():
        raise InputError(f"no {CONFIG_NAME} at {path}", "run `bundler init` in the project directory to write one")
    return parse_config(read_utf8(path), path)
