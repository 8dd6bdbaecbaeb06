"""An ISO/IEC 42001 A.7.5-style data provenance register: one row per data item that shaped the result."""

from __future__ import annotations

import csv
import io

from bundler.publish.compliance.evidence import NOT_RECORDED, Evidence, as_map, without_host_paths

COLUMNS = ("item", "kind", "bundle_path", "sha256", "origin", "date", "note")


def build_register(ev: Evidence) -> str:
    """CSV text (LF line ends, sorted rows within each kind) of every dataset file, split, model file and commit."""
    recorded = str(ev.run.get("started") or NOT_RECORDED)
    origin_data = str(without_host_paths(ev.dataset.get("hub_id") or ev.dataset.get("source") or NOT_RECORDED))
    vendored = ev.vendored_dataset_files()
    rows: list[tuple[str, ...]] = []
    for name, sha in sorted(as_map(ev.dataset.get("files")).items()):
        path = vendored.get(name, f"{ev.recipe('dataset.json')} (named, not vendored)")
        rows.append(
            (name, "dataset file", path, sha, origin_data, recorded, "hash checked by the runtime before training")
        )
    splits = ev.recipe("splits.json")
    method = as_map(ev.splits.get("method")).get("name") or NOT_RECORDED
    rows.append(
        (
            "split manifest",
            "split",
            splits,
            ev.hashes.get(splits, NOT_RECORDED),
            f"bundler split ({method})",
            recorded,
            "sorted example IDs per split with content and root hashes",
        )
    )
    model_origin = str(ev.model.get("upstream_id") or ev.model.get("id") or NOT_RECORDED)
    revision = ev.model.get("revision")
    for name, sha in sorted(as_map(ev.model.get("files")).items()):
        rows.append(
            (
                name,
                "base model file",
                ev.recipe("model.json"),
                sha,
                f"{model_origin}@{revision}" if revision else model_origin,
                recorded,
                f"source {ev.model.get('source')}",
            )
        )
    code = ev.recipe("code.tar")
    rows.append(
        (
            "code commit",
            "code",
            code,
            ev.hashes.get(code, NOT_RECORDED),
            f"git {ev.source.get('commit') or NOT_RECORDED}",
            recorded,
            f"tree {ev.source.get('tree') or NOT_RECORDED}",
        )
    )
    lock = ev.recipe("requirements.lock")
    rows.append(
        (
            "requirements.lock",
            "environment",
            lock,
            ev.hashes.get(lock, NOT_RECORDED),
            "bundler lock",
            recorded,
            f"{len(ev.pins)} pinned packages with hashes",
        )
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    return buffer.getvalue()
