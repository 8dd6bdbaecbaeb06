"""Find and load the project's dataset files; describe them for dataset.json.

`datasets` is imported inside `load_records` only: describing and hashing the files stays cheap, and
the CLI never pays for the import unless it reads records.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from bundler import hub, ui
from bundler.errors import DatasetError, SymlinkError
from bundler.recipe.config import HUB_DATASET_PREFIXES, BundleConfig
from bundler.text import check_utf8_file

DATASET_SCHEMA = "bundler.dataset/1"

# file suffix -> (format recorded in dataset.json, `datasets` builder name)
_SUFFIXES: dict[str, str] = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
}
_BUILDERS = {"jsonl": "json", "csv": "csv", "parquet": "parquet"}
_HUB_DATASET = re.compile(
    r"^(?:hf://datasets/|hub:|hf:(?!//))(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+?)(?:@(?P<rev>[^/]+))?(?:/(?P<path>.*))?$"
)
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class DatasetFiles:
    """The dataset's files on disk: where they live, their format, and their sha256."""

    source: str
    format: str
    data_dir: Path
    files: dict[str, Path]
    sha256: dict[str, str]
    hub_id: str | None = None  # Hub datasets: ORG/NAME
    revision: str | None = None  # Hub datasets: the commit sha the revision resolved to


@dataclass(frozen=True)
class DatasetRecords:
    """The loaded rows (one dict per example, file order) and the files they came from."""

    records: list[dict[str, Any]]
    files: DatasetFiles

    @property
    def sha256(self) -> dict[str, str]:
        return self.files.sha256


def sha256_of(path: Path) -> str:
    """Return the sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def find_dataset_files(config: BundleConfig, project_dir: Path) -> DatasetFiles:
    """Resolve data.path (a file, or a directory of same-format files) against project_dir.

    Symlinks are resolved once, here: `files` maps each name (as found under data.path) to the real
    file, and the name alone goes into dataset.json, so a link into another directory vendors the file
    it points at, never a namesake beside its target.
    """
    spec = config.data.path
    if spec.startswith(HUB_DATASET_PREFIXES):
        return find_hub_dataset_files(config)
    path = Path(spec).expanduser()
    if not path.is_absolute():
        path = project_dir.absolute() / path
    _refuse_broken_link(path)
    if path.is_file():
        data_dir, candidates = path.parent, [path]
    elif path.is_dir():
        data_dir = path
        candidates = sorted(p for p in path.rglob("*") if p.suffix.lower() in _SUFFIXES and _is_file(p))
    else:
        raise DatasetError(
            f"dataset not found: {spec} (looked at {path})",
            "check data.path in bundle.toml; relative paths are read from the project directory",
        )
    if not candidates:
        raise DatasetError(
            f"no JSONL, CSV or Parquet files under {spec}",
            "put the dataset files there, or point data.path at a file",
        )
    fmt = _format_of(config.data.format, candidates, spec)
    if config.data.format != "auto" and path.is_dir():
        candidates = [p for p in candidates if _SUFFIXES.get(p.suffix.lower()) == fmt]
    if not candidates:
        raise DatasetError(
            f"no {fmt} files under {spec}",
            "put the dataset files there, or point data.path at a file",
        )
    files = {p.relative_to(data_dir).as_posix(): p.resolve() for p in candidates}
    return DatasetFiles(
        source=recorded_source(spec, project_dir),
        format=fmt,
        data_dir=data_dir,
        files=files,
        sha256={name: sha256_of(p) for name, p in files.items()},
    )


def _refuse_broken_link(path: Path) -> None:
    """A broken link (or a loop) on the way to the data is named, with where it points."""

    for candidate in (path, *path.parents):
        if candidate.is_symlink():
            try:
                candidate.resolve(strict=True)
            except (OSError, RuntimeError):
                raise SymlinkError(candidate, os.readlink(candidate)) from None


def _is_file(path: Path) -> bool:
    if path.is_symlink():
        _refuse_broken_link(path)
    return path.is_file()


def recorded_source(spec: str, project_dir: Path) -> str:
    """data.path as dataset.json records it: relative to the project, never a host path.

    A path inside the project is written relative to it (normalised, `./` and `a/../` folded); a path
    outside (absolute, `..`, or `~`) is recorded by its last component only, marked as external.
    """
    given = Path(spec).expanduser()
    project = project_dir.absolute()
    full = Path(os.path.normpath(given if given.is_absolute() else project / given))
    try:
        return full.relative_to(Path(os.path.normpath(project))).as_posix() or "."
    except ValueError:
        return f"(outside the project)/{full.name}"


def _format_of(configured: str, candidates: Sequence[Path], spec: str) -> str:
    if configured != "auto":
        return configured
    found = {_SUFFIXES.get(p.suffix.lower()) for p in candidates}
    if None in found or len(found) != 1:
        names = ", ".join(sorted({p.suffix or p.name for p in candidates})) or "none"
        raise DatasetError(
            f"cannot tell the format of {spec} from its file suffix(es): {names}",
            "set data.format to 'jsonl', 'csv' or 'parquet', or use one of the suffixes "
            ".jsonl/.json, .csv, .parquet for all files",
        )
    return found.pop()  # type: ignore[return-value]


def dataset_dir(config: BundleConfig, project_dir: Path) -> Path:
    """The directory the dataset.json file names are relative to (the runtime's BUNDLER_DATA_DIR)."""
    return find_dataset_files(config, project_dir).data_dir


def find_hub_dataset_files(config: BundleConfig) -> DatasetFiles:
    """Resolve data.path = hf://datasets/ORG/NAME[@REV][/PATH or GLOB] to a commit, fetch its files, check them.

    Each file must match the Hub's metadata at that commit (an LFS file's sha256, else its git blob
    sha1) before it is read; dataset.json then records the commit and every file's sha256.
    """

    spec = config.data.path
    match = _HUB_DATASET.match(spec)
    if match is None:
        raise DatasetError(
            f"data.path {spec!r} is not a Hub dataset path",
            "write it as hf://datasets/ORG/NAME, optionally followed by /PATH (a file, folder or glob) in the repo",
        )
    repo_id, inline, inside = match["repo"], match["rev"], (match["path"] or "").strip("/")
    if inline and config.data.revision and inline != config.data.revision:
        raise DatasetError(
            f"data.path pins revision {inline!r} but data.revision says {config.data.revision!r}",
            "give the revision once: in data.revision, or as @REV in data.path",
        )
    revision = inline or config.data.revision or "main"
    pinned = hub.resolve_revision(repo_id, "dataset", revision)
    if not _COMMIT.match(revision):
        ui.warn(
            f"data.revision {revision!r} of {repo_id} resolved to commit {pinned.commit} (recorded in dataset.json); "
            "set data.revision to that sha to pin the project to it"
        )
    chosen = _hub_candidates(list(pinned.files), inside)
    where = f"{spec} at commit {pinned.commit[:12]}"
    if not chosen:
        raise DatasetError(
            f"no JSONL, CSV or Parquet files in {where}",
            "point data.path at the folder, file or glob in the repo that holds the data",
        )
    fmt = _format_of(config.data.format, [PurePosixPath(p) for p in chosen], spec)  # type: ignore[misc]
    chosen = [p for p in chosen if _SUFFIXES.get(PurePosixPath(p).suffix.lower(), fmt) == fmt]
    if not chosen:
        raise DatasetError(f"no {fmt} files in {where}", "check data.format and data.path")
    directory, sha256 = hub.fetch_files(pinned, chosen)
    return DatasetFiles(
        source=f"hf://datasets/{repo_id}",
        format=fmt,
        data_dir=directory,
        files={name: directory / name for name in chosen},
        sha256=sha256,
        hub_id=repo_id,
        revision=pinned.commit,
    )


def _hub_candidates(paths: list[str], inside: str) -> list[str]:
    """The repo's data files under `inside` (a file, folder or glob); hidden files never count."""
    visible = [p for p in paths if not any(part.startswith(".") for part in p.split("/"))]
    if inside in visible:
        return [inside]  # named exactly: the format check decides whether it can be read
    if any(c in inside for c in "*?["):
        chosen = [p for p in visible if fnmatch.fnmatchcase(p, inside)]
    else:
        chosen = [p for p in visible if not inside or p.startswith(inside + "/")]
    return sorted(p for p in chosen if PurePosixPath(p).suffix.lower() in _SUFFIXES)


def describe_dataset(config: BundleConfig, project_dir: Path) -> dict[str, Any]:
    """Return dataset.json: format, the configured source string and the sha256 of each file."""
    return dataset_record(find_dataset_files(config, project_dir))


def dataset_record(found: DatasetFiles) -> dict[str, Any]:
    """dataset.json for files already found: format, the recorded source and the sha256 of each file."""
    description: dict[str, Any] = {
        "schema": DATASET_SCHEMA,
        "format": found.format,
        "source": found.source,
        "files": dict(sorted(found.sha256.items())),
    }
    if found.hub_id is not None:  # the card lists the dataset on the Hub from "hub_id"
        description.update(hub_id=found.hub_id, revision=found.revision)
    return description


def load_records(config: BundleConfig, project_dir: Path) -> DatasetRecords:
    """Load every row with `datasets`, in file order; raise DatasetError if unusable."""
    found = find_dataset_files(config, project_dir)
    check_text_files(found)
    # datasets refuses empty files with a message about data_files; say what is really wrong.
    is_empty = all(p.stat().st_size == 0 for p in found.files.values())
    rows = [] if is_empty else _read_rows(found)
    if not rows:
        raise DatasetError(
            f"dataset {found.source} has no examples",
            "add examples to the file(s); an empty dataset cannot be split",
        )
    id_field = config.data.id_field
    if id_field is not None and id_field not in rows[0]:
        columns = ", ".join(sorted(rows[0]))
        raise DatasetError(
            f"dataset {found.source} has no ID field {id_field!r} (columns: {columns})",
            "set data.id_field to the column holding each example's ID, "
            "or remove it to use each example's content hash as its ID",
        )
    return DatasetRecords(records=rows, files=found)


def check_text_files(found: DatasetFiles) -> None:
    """JSONL and CSV files must be UTF-8 (what the runtime reads them as); the first bad byte is named."""

    if found.format in ("jsonl", "csv"):
        for name in sorted(found.files):
            check_utf8_file(found.files[name], label=found.data_dir / name)


def _read_rows(found: DatasetFiles) -> list[dict[str, Any]]:
    import datasets

    paths = [str(found.files[name]) for name in sorted(found.files)]
    options: dict[str, Any] = {}
    if found.format == "csv":
        # CSV has no types: read every column as a string and keep empty cells as "", so a row
        # equals what csv.DictReader gives (pandas would turn "007" into 7, "" into NaN).
        options = {
            "features": datasets.Features({c: datasets.Value("string") for c in _csv_columns(paths[0])}),
            "keep_default_na": False,
            "na_filter": False,
        }
    # A private cache per load: a stale Arrow cache can never stand in for the files we hashed.
    import tempfile

    bars_were_off = datasets.utils.are_progress_bars_disabled()
    datasets.utils.disable_progress_bars()  # a per-file bar is noise next to bundler's own output
    try:
        with tempfile.TemporaryDirectory(prefix="bundler-datasets-") as cache:
            return _load_table(datasets, found, paths, cache, options)
    finally:
        if not bars_were_off:
            datasets.utils.enable_progress_bars()


def _load_table(
    datasets: Any, found: DatasetFiles, paths: list[str], cache: str, options: dict[str, Any]
) -> list[dict[str, Any]]:
    try:
        table = datasets.load_dataset(
            _BUILDERS[found.format], data_files=paths, split="train", cache_dir=cache, **options
        )
    except (ValueError, TypeError, OSError) as exc:
        raise DatasetError(
            f"cannot read dataset {found.source} as {found.format}: {_first_line(exc)}",
            "check that the file is valid " + found.format.upper() + " (one JSON object per line "
            "for JSONL) and that data.format matches it",
        ) from exc
    except Exception as exc:  # datasets wraps parser errors in its own DatasetGenerationError
        if type(exc).__name__ != "DatasetGenerationError":
            raise
        cause = exc.__cause__ or exc
        raise DatasetError(
            f"cannot read dataset {found.source} as {found.format}: {_first_line(cause)}",
            "check that every row is valid " + found.format.upper() + " with the same columns",
        ) from exc
    if found.format == "jsonl":
        return _jsonl_rows_as_written(paths, expected=len(table))
    if found.format == "csv":
        _check_csv_rows(paths)
    return table.to_list()


def _jsonl_rows_as_written(paths: list[str], expected: int) -> list[dict[str, Any]]:
    """Return JSONL rows exactly as json.loads reads them (what the runtime reads and hashes)."""
    # datasets parses JSONL into one Arrow schema: keys a row lacks come back as None, ints in a
    # column that also holds floats come back as floats, and ISO date strings come back as
    # datetimes. Each would change the content hash the runtime recomputes from the file with
    # json.loads, so the rows are taken as written; datasets has already validated every line.
    import json

    rows: list[dict[str, Any]] = []
    for path in paths:
        with open(path, encoding="utf-8") as stream:
            rows.extend(json.loads(line) for line in stream if line.strip())
    if len(rows) != expected:
        raise DatasetError(
            f"datasets read {expected} rows but the files hold {len(rows)} JSON lines",
            "write one JSON object per line, with no multi-line values",
        )
    return rows


def _check_csv_rows(paths: list[str]) -> None:
    """Refuse rows with more or fewer cells than the header: readers disagree on what they mean."""
    # pandas pads a short row with "" where csv.DictReader (the runtime's reader) gives None, so
    # the two would hash the same row differently.
    import csv

    for path in paths:
        with open(path, newline="", encoding="utf-8") as stream:
            reader = csv.reader(stream)
            width = len(next(reader, []))
            for row in reader:
                if row and len(row) != width:
                    raise DatasetError(
                        f"{Path(path).name} line {reader.line_num}: {len(row)} cell(s), the header has {width}",
                        "give every row one cell per column (an empty cell is written as ,,)",
                    )


def _csv_columns(path: str) -> list[str]:
    import csv

    with open(path, newline="", encoding="utf-8") as stream:
        header = next(csv.reader(stream), None)
    if not header:
        raise DatasetError(f"{path} has no header row", "the first line of a CSV must name its columns")
    return header


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
