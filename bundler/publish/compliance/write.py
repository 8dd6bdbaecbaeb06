"""`bundler compliance`: verify the bundle, then write the four documents atomically into one directory."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bundler.bundle.atomic import atomic_dir
from bundler.bundle.bag import RUNS, list_runs, open_bundle, read_json_object, resolve_run
from bundler.bundle.hashing import canonical_json, sha256_bytes, sha256_file
from bundler.bundle.verify import require_verified
from bundler.errors import InputError, OutputExistsError
from bundler.paths import render_template
from bundler.publish.compliance.bom import build_bom
from bundler.publish.compliance.datasummary import data_facts, summary_sections
from bundler.publish.compliance.evidence import Evidence, Fact, Source
from bundler.publish.compliance.register import build_register
from bundler.publish.compliance.techdoc import Section, annex_iv, annex_xi

SCHEMA = "bundler.compliance/1"
TECHDOC_SCHEMA = "bundler.techdoc/1"
CHECK_SCHEMA = "bundler.check/1"
FILES = (
    "annex-iv.md",
    "annex-xi.md",
    "bom.cdx.json",
    "provenance-register.csv",
    "techdoc.json",
    "training-data-summary.md",
)
# A dict or list longer than this is summarised in the Markdown; techdoc.json always holds all of it.
MAX_INLINE = 12


@dataclass(frozen=True)
class ComplianceResult:
    bundle_id: str
    run_id: str
    out: Path
    files: dict[str, str]  # name -> sha256

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "bundle_id": self.bundle_id,
            "run_id": self.run_id,
            "out": str(self.out),
            "files": self.files,
        }


def compliance_documents(
    bundle: Path, run_id: str | None = None, check_reports: tuple[Path, ...] = ()
) -> tuple[str, str, dict[str, str]]:
    """Verify the bundle (VerifyFailed, exit 1, when it does not) and return (bundle ID, run ID, {name: text})."""
    open_bundle(bundle)
    require_verified(bundle)
    run = resolve_run(bundle, run_id)
    ev = Evidence.read(bundle, run)
    data = data_facts(ev)
    signatures = signature_facts(ev)
    checks = [*replay_facts(ev), *(check_report_fact(ev, path) for path in check_reports)]
    iv, xi, summary = annex_iv(ev, data, signatures, checks), annex_xi(ev, data), summary_sections(ev, data)
    bundle_id = ev.bag_info.get("Bundle-Id", "")
    techdoc = {
        "schema": TECHDOC_SCHEMA,
        "bundle_id": bundle_id,
        "run_id": run,
        "annex_iv": [s.as_dict() for s in iv],
        "annex_xi": [s.as_dict() for s in xi],
        "training_data_summary": [s.as_dict() for s in summary],
    }
    texts = {
        "annex-iv.md": render_markdown(
            "EU AI Act Annex IV: technical documentation (section 2)", ANNEX_IV_INTRO, ev, iv
        ),
        "annex-xi.md": render_markdown(
            "EU AI Act Annex XI: technical documentation of a GPAI model (sections 1-2)", ANNEX_XI_INTRO, ev, xi
        ),
        "training-data-summary.md": render_markdown(
            "Public summary of training content (sections 1-2)", SUMMARY_INTRO, ev, summary
        ),
        "techdoc.json": canonical_json(techdoc),
        "bom.cdx.json": build_bom(ev),
        "provenance-register.csv": build_register(ev),
    }
    return bundle_id, run, texts


def write_compliance(
    bundle: Path, out: Path, run_id: str | None = None, check_reports: tuple[Path, ...] = ()
) -> ComplianceResult:
    """Write the documents into `out` (new or empty); nothing is written when verify fails."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputExistsError(out)
    bundle_id, run, texts = compliance_documents(bundle, run_id, check_reports)
    with atomic_dir(out) as work:
        for name, text in sorted(texts.items()):
            (work / name).write_bytes(text.encode("utf-8"))
    files = {name: sha256_bytes(texts[name].encode("utf-8")) for name in sorted(texts)}
    return ComplianceResult(bundle_id, run, out, files)


ANNEX_IV_INTRO = (
    "Facts for points 1-2 of Annex IV of Regulation (EU) 2024/1689, read from a verified bundler bundle. "
    "Article 18 asks providers to keep this documentation for 10 years; keep it with the bundle."
)
ANNEX_XI_INTRO = (
    "Facts for sections 1 and 2 of Annex XI of Regulation (EU) 2024/1689, read from a verified bundler bundle."
)
SUMMARY_INTRO = (
    "Sections 1 and 2 of the Commission's template for the public summary of training content (July 2025), "
    "for this fine-tune's own training data (the base model's data is documented by its provider)."
)


def render_markdown(title: str, intro: str, ev: Evidence, sections: list[Section]) -> str:
    view = [
        {
            "point": s.point,
            "title": s.title,
            "facts": [
                {"label": f.label, "text": as_text(f.value), "status": f.status, "sources": f.sources} for f in s.facts
            ],
        }
        for s in sections
    ]
    text = render_template(
        "compliance.md.j2",
        title=title,
        intro=intro,
        bundle_id=ev.bag_info.get("Bundle-Id", ""),
        run_id=ev.run_id,
        sections=view,
    )
    return text.rstrip("\n") + "\n"


def as_text(value: Any) -> str:
    """A value for one Markdown line: long mappings and lists are summarised (techdoc.json has them whole)."""
    if isinstance(value, dict):
        items = [f"{k}: {as_text(v) if isinstance(v, (dict, list)) else v}" for k, v in value.items()]
        if len(items) > MAX_INLINE:
            return f"{len(items)} entries: " + "; ".join(items[:MAX_INLINE]) + "; ... (all in techdoc.json)"
        return "; ".join(items)
    if isinstance(value, list):
        items = [json.dumps(v, sort_keys=True) if isinstance(v, dict) else str(v) for v in value]
        if len(items) > MAX_INLINE:
            return f"{len(items)} entries: " + ", ".join(items[:MAX_INLINE]) + ", ... (all in techdoc.json)"
        return ", ".join(items)
    return str(value).replace("\n", "\\n")


def signature_facts(ev: Evidence) -> list[Fact]:
    """Every signature file in the bundle and the key IDs its signer records."""
    names = sorted(p for p in ev.tag_hashes if p.endswith((".dsse.json", ".sig")) or "signer" in p.rsplit("/", 1)[-1])
    run_sig = ev.run_file("model.sig")
    if run_sig in ev.hashes:
        names.append(run_sig)
    if not names:
        return [Fact("Signatures", "not signed: the bundle holds no signature (run `bundler sign`)", (), "missing")]
    keyids = sorted(
        {
            str(read_json_object(ev.bundle / n).get("keyid"))
            for n in names
            if "signer" in n and read_json_object(ev.bundle / n).get("keyid")
        }
    )
    return [
        ev.fact("Signature files", names, *names),
        ev.fact("Signing key IDs", keyids, *(n for n in names if "signer" in n)),
    ]


def replay_facts(ev: Evidence) -> list[Fact]:
    """Other recorded runs of the same recipe and whether each reproduced this run's adapter bit for bit."""
    others = [r for r in list_runs(ev.bundle) if r != ev.run_id]
    if not others:
        return []
    want = ev.results.get("adapter_sha256")
    outcome = {}
    for other in others:
        got = read_json_object(ev.bundle / RUNS / other / "results.json").get("adapter_sha256")
        outcome[other[:12]] = "identical adapter" if got and got == want else "different adapter"
    return [ev.fact("Other runs of this recipe (replays)", outcome, *(f"{RUNS}/{r}/results.json" for r in others))]


def check_report_fact(ev: Evidence, path: Path) -> Fact:
    """A `bundler check --json` report given with --check-report; it must be about this bundle."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(
            f"cannot read the check report {path}: {exc}", "pass the output of `bundler check --json`"
        ) from None
    if not isinstance(report, dict) or report.get("schema") != CHECK_SCHEMA:
        raise InputError(f"{path} is not a `bundler check --json` report", "pass the output of `bundler check --json`")
    if report.get("bundle_id") not in (None, ev.bag_info.get("Bundle-Id")):
        raise InputError(
            f"{path} is a check of another bundle ({str(report.get('bundle_id'))[:12]})", "pass a check of this bundle"
        )
    keys = ("verdict", "run_id", "examples", "label_flips", "max_abs_loglik_delta", "over_bound", "metrics")
    value = {k: report[k] for k in keys if k in report}
    return Fact(f"Check report ({path.name}, outside the bundle)", value, (Source(path.name, sha256_file(path)),))
