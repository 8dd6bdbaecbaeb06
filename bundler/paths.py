"""Where bundler keeps things: its cache, and the folders it ships (templates/, images/, runtime/)."""

from __future__ import annotations

import os
from pathlib import Path


def resource_dir(name: str) -> Path:
    """Return the folder `name` ("templates" or "images"), from the checkout or the installed wheel."""
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / name).is_dir():
        return checkout / name
    import importlib.resources

    return Path(str(importlib.resources.files(f"bundler.{name}")))


def render_template(template: str, **values: object) -> str:
    """Render templates/<template> with jinja2; output is byte-identical for the same values."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resource_dir("templates"))),
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
    return env.get_template(template).render(**values)


def cache_dir() -> Path:
    root = Path(os.environ.get("BUNDLER_CACHE") or Path.home() / ".cache" / "bundler")
    root.mkdir(parents=True, exist_ok=True)
    return root


def runtime_source() -> Path:
    """The runtime package shipped with this bundler (copied into each recipe)."""
    return Path(__file__).resolve().parent / "runtime"
