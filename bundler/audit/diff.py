"""What changed between two bundles: config, seeds, dependencies, image, code, splits, and the latest runs."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tarfile
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from bundler.bundle.bag import RECIPE, RUNS, bundle_id_of, list_runs, open_bundle, read_json_object
from bundler.bundle.lockfile import parse_lock
from bundler.records import RecipeView

DIFF_SCHEMA = "bundler.diff/1"
SPLITS = ("train", "val", "test")


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"a.b.c": leaf}; lists are leaves (a reordered target_modules list is a change worth seeing)."""
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for key in sorted(value):
            flat.update(flatten(value[key], f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: value} if prefix else {}


def changed_values(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows {key, old, new} for every key whose value differs (a missing side is None)."""
    return [
        {"key": key, "old": old.get(key), "new": new.get(key)}
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]


def _config(recipe: Path) -> dict[str, Any]:
    return flatten(RecipeView.at(recipe).config)


def _locked_versions(recipe: Path) -> dict[str, str]:
    path = recipe / "requirements.lock"
    return {pin.name: pin.version for pin in parse_lock(path)} if path.is_file() else {}


def _code_files(recipe: Path) -> dict[str, str]:
    """{path: sha256} of the members of code.tar (the packaged commit)."""
    path = recipe / "code.tar"
    if not path.is_file():
        return {}
    files = {}
    with tarfile.open(path) as tar:
        for member in tar:
            if member.isreg():
                handle = tar.extractfile(member)
                files[member.name] = hashlib.sha256(handle.read() if handle else b"").hexdigest()
            elif member.issym():
                files[member.name] = hashlib.sha256(b"link:" + member.linkname.encode()).hexdigest()
    return files


def _split_of(recipe: Path) -> dict[str, str]:
    """{example id: split name} from splits.json."""
    manifest = read_json_object(recipe / "splits.json")
    return {example: name for name, split in (manifest.get("splits") or {}).items() for example in split.get("ids", [])}


def _latest_run(bundle: Path) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
    runs = list_runs(bundle)
    if not runs:
        return None, {}, {}
    run_dir = bundle / RUNS / runs[-1]
    # The "why" texts explain determinism settings; they change with bundler's wording, not with the run.
    env = {k: v for k, v in flatten(read_json_object(run_dir / "env.json")).items() if not k.endswith(".why")}
    env.pop("schema", None)
    results = flatten(read_json_object(run_dir / "results.json"))
    results.pop("schema", None)
    return runs[-1], env, results


def _diff_dependencies(old: Mapping[str, str], new: Mapping[str, str]) -> dict[str, list[dict[str, str]]]:
    return {
        "added": [{"name": n, "version": new[n]} for n in sorted(set(new) - set(old))],
        "removed": [{"name": n, "version": old[n]} for n in sorted(set(old) - set(new))],
        "changed": [{"name": n, "old": old[n], "new": new[n]} for n in sorted(set(old) & set(new)) if old[n] != new[n]],
    }


def _diff_splits(old: Mapping[str, str], new: Mapping[str, str]) -> dict[str, Any]:
    moved = Counter((old[e], new[e]) for e in set(old) & set(new) if old[e] != new[e])
    names = sorted(set(old.values()) | set(new.values()), key=lambda s: (SPLITS.index(s) if s in SPLITS else 9, s))
    return {
        "counts": {
            s: {"old": sum(v == s for v in old.values()), "new": sum(v == s for v in new.values())} for s in names
        },
        "moved": [{"from": a, "to": b, "count": n} for (a, b), n in sorted(moved.items())],
        "added": {s: n for s in names if (n := sum(new[e] == s for e in set(new) - set(old)))},
        "removed": {s: n for s in names if (n := sum(old[e] == s for e in set(old) - set(new)))},
    }


def _diff_code(a: Path, b: Path) -> dict[str, Any]:
    old, new = read_json_object(a / "source.json"), read_json_object(b / "source.json")
    old_files, new_files = _code_files(a), _code_files(b)
    patch = [(p / "code.patch").read_bytes() if (p / "code.patch").is_file() else b"" for p in (a, b)]
    return {
        "old": {k: old.get(k) for k in ("commit", "tree", "dirty", "repo")},
        "new": {k: new.get(k) for k in ("commit", "tree", "dirty", "repo")},
        "changed": old_files != new_files or patch[0] != patch[1] or old.get("commit") != new.get("commit"),
        "patch_changed": patch[0] != patch[1],
        "files": {
            "added": sorted(set(new_files) - set(old_files)),
            "removed": sorted(set(old_files) - set(new_files)),
            "modified": sorted(p for p in set(old_files) & set(new_files) if old_files[p] != new_files[p]),
        },
    }


def _image(recipe: Path) -> dict[str, Any]:
    record = read_json_object(recipe / "image.lock.json")
    return {k: record.get(k) for k in ("name", "reference", "digest")}


def diff_bundles(a: Path, b: Path) -> dict[str, Any]:
    """The `bundler.diff/1` object: every difference between bundle `a` (old) and `b` (new)."""
    with _as_directory(a) as old_bundle, _as_directory(b) as new_bundle:
        return _diff_directories(old_bundle, new_bundle, a, b)


def _diff_directories(a: Path, b: Path, shown_a: Path, shown_b: Path) -> dict[str, Any]:
    ra, rb = a / RECIPE, b / RECIPE
    config = changed_values(_config(ra), _config(rb))
    old_image, new_image = _image(ra), _image(rb)
    old_run, old_env, old_results = _latest_run(a)
    new_run, new_env, new_results = _latest_run(b)
    if old_run is None or new_run is None:  # nothing to compare a run with: say so instead of listing it all
        old_env = new_env = old_results = new_results = {}
    return {
        "schema": DIFF_SCHEMA,
        "old": {"bundle": str(shown_a), "bundle_id": bundle_id_of(a)},
        "new": {"bundle": str(shown_b), "bundle_id": bundle_id_of(b)},
        "same_recipe": bundle_id_of(a) == bundle_id_of(b),
        "config": [row for row in config if "seed" not in row["key"].rsplit(".", 1)[-1]],
        "seeds": [row for row in config if "seed" in row["key"].rsplit(".", 1)[-1]],
        "dependencies": _diff_dependencies(_locked_versions(ra), _locked_versions(rb)),
        "image": {"old": old_image, "new": new_image, "changed": old_image != new_image},
        "code": _diff_code(ra, rb),
        "splits": _diff_splits(_split_of(ra), _split_of(rb)),
        "runs": {
            "old_run": old_run,
            "new_run": new_run,
            "environment": changed_values(old_env, new_env),
            "metrics": changed_values(old_results, new_results),
        },
    }


@contextlib.contextmanager
def _as_directory(path: Path) -> Iterator[Path]:
    """A bundle directory as is; an exported tar imported (safely, verified) into a temp dir for the diff."""
    if path.is_file():
        # deferred: it loads cryptography, which callers that never reach this line should not pay for
        from bundler.bundle.archive import import_bundle

        with tempfile.TemporaryDirectory(prefix="bundler-diff-") as tmp:
            import_bundle(path, Path(tmp) / "bundle")
            yield Path(tmp) / "bundle"
    else:
        yield open_bundle(path)


def has_changes(diff: Mapping[str, Any]) -> bool:
    deps = diff["dependencies"]
    return bool(
        diff["config"]
        or diff["seeds"]
        or any(deps.values())
        or diff["image"]["changed"]
        or diff["code"]["changed"]
        or diff["splits"]["moved"]
        or diff["splits"]["added"]
        or diff["splits"]["removed"]
        or diff["runs"]["environment"]
        or diff["runs"]["metrics"]
        or (diff["runs"]["old_run"] is None) != (diff["runs"]["new_run"] is None)
    )


def _show(value: Any) -> str:
    if value is None:
        return "—"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def render_diff(diff: Mapping[str, Any], width: int | None = None) -> str:
    """The diff as readable rich tables (plain text when not on a terminal)."""
    from rich.console import Console
    from rich.table import Table

    buffer = io.StringIO()
    console = Console(file=buffer, width=width or 110, no_color=True, highlight=False)
    console.print(f"old {diff['old']['bundle_id'][:12]}  {diff['old']['bundle']}")
    console.print(f"new {diff['new']['bundle_id'][:12]}  {diff['new']['bundle']}")
    if not has_changes(diff):
        console.print("no differences" + (" (same recipe)" if diff["same_recipe"] else ""))
        return buffer.getvalue()

    def table(title: str, rows: list[tuple[str, str, str]], headers: tuple[str, str, str] = ("", "old", "new")) -> None:
        if not rows:
            return
        grid = Table(title=title, title_justify="left", show_lines=False)
        for header in headers:
            grid.add_column(header, overflow="fold")
        for row in rows:
            grid.add_row(*row)
        console.print(grid)

    table("config", [(r["key"], _show(r["old"]), _show(r["new"])) for r in diff["config"]])
    table("seeds", [(r["key"], _show(r["old"]), _show(r["new"])) for r in diff["seeds"]])
    deps = diff["dependencies"]
    table(
        "dependencies",
        [
            *((d["name"], "—", d["version"]) for d in deps["added"]),
            *((d["name"], d["version"], "—") for d in deps["removed"]),
            *((d["name"], d["old"], d["new"]) for d in deps["changed"]),
        ],
    )
    image = diff["image"]
    if image["changed"]:
        table(
            "base image",
            [
                (k, _show(image["old"][k]), _show(image["new"][k]))
                for k in ("reference", "digest")
                if image["old"][k] != image["new"][k]
            ],
        )
    code = diff["code"]
    if code["changed"]:
        rows = [("commit", _show(code["old"]["commit"]), _show(code["new"]["commit"]))]
        if code["old"]["dirty"] or code["new"]["dirty"]:
            rows.append(("dirty", _show(code["old"]["dirty"]), _show(code["new"]["dirty"])))
        rows += [(f"{kind} file", "", path) for kind, paths in code["files"].items() for path in paths]
        table("code", rows)
    splits = diff["splits"]
    if splits["moved"] or splits["added"] or splits["removed"]:
        rows = [(name, str(c["old"]), str(c["new"])) for name, c in splits["counts"].items()]
        rows += [(f"moved {m['from']} → {m['to']}", "", str(m["count"])) for m in splits["moved"]]
        rows += [(f"added to {s}", "", str(n)) for s, n in splits["added"].items()]
        rows += [(f"removed from {s}", str(n), "") for s, n in splits["removed"].items()]
        table("splits (examples)", rows)
    runs = diff["runs"]
    if (runs["old_run"] is None) != (runs["new_run"] is None):
        console.print(f"runs: only the {'new' if runs['new_run'] else 'old'} bundle has a recorded run")
    table("environment of the latest run", [(r["key"], _show(r["old"]), _show(r["new"])) for r in runs["environment"]])
    table("metrics of the latest run", [(r["key"], _show(r["old"]), _show(r["new"])) for r in runs["metrics"]])
    return buffer.getvalue()
