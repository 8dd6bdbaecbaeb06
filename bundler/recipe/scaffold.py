"""`bundler init`: a commented bundle.toml and requirements.in for a new project."""

from __future__ import annotations

import re
from pathlib import Path

from bundler.bundle.atomic import atomic_write_text
from bundler.errors import InputError
from bundler.paths import render_template
from bundler.recipe.config import CONFIG_NAME
from bundler.recipe.configfile import parse_config


def init_project(path: Path, name: str | None = None) -> list[Path]:
    """Write bundle.toml (and requirements.in when absent) into `path`; never overwrite a bundle.toml."""
    path.mkdir(parents=True, exist_ok=True)
    config_path = path / CONFIG_NAME
    if config_path.exists():
        raise InputError(f"{config_path} already exists", "edit it, or run `bundler init` in another directory")
    name = name or re.sub(r"[^A-Za-z0-9._-]+", "-", path.resolve().name).strip("-.") or "project"
    text = render_template("bundle.toml.j2", name=name)
    parse_config(text, config_path)  # the template must always be a valid config
    atomic_write_text(config_path, text)
    written = [config_path]
    requirements = path / "requirements.in"
    if not requirements.exists():
        atomic_write_text(requirements, render_template("requirements.in.j2"))
        written.append(requirements)
    return written
