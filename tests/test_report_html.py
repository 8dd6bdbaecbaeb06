"""The replay report's files: report.json, the loss overlay PNG, and the HTML page in a real headless browser.

The browser is Debian's `chromium` (apt-get install -y chromium), started by the test. Without it the
browser tests skip, except under CI (CI set), where a missing browser is a failure.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bundler.audit.report import DIVERGENCE_COLOR, render_html, render_overlay_png, write_report
from tests.fixtures.recorded_runs import LOSSES, compare, make_bundle, record

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def diverged_report(tmp_path: Path) -> dict[str, Any]:
    bundle = make_bundle(tmp_path)
    staging = tmp_path / "staging"
    staging.mkdir()
    old = record(bundle, staging, "a", LOSSES)
    bent = LOSSES[:4] + [x * 1.05 for x in LOSSES[4:]]
    new = record(bundle, staging, "b", bent, adapter=b"drifted")
    return compare(bundle, old, new)


def identical_report(tmp_path: Path, steps: int | None = None) -> dict[str, Any]:
    bundle = make_bundle(tmp_path)
    staging = tmp_path / "staging"
    staging.mkdir()
    old = record(bundle, staging, "a", LOSSES)
    new = record(bundle, staging, "b", LOSSES[:steps] if steps else LOSSES, max_steps_override=steps)
    return compare(bundle, old, new, steps=steps)


def pixels(png: bytes) -> Any:
    from PIL import Image

    return Image.open(io.BytesIO(png)).convert("RGB")


def has_color(png: bytes, hex_color: str) -> bool:
    target = tuple(int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return any(color == target for _, color in (pixels(png).getcolors(maxcolors=1 << 20) or []))


def test_report_dir_holds_json_png_and_a_self_contained_page(tmp_path: Path) -> None:
    report = diverged_report(tmp_path)
    written = write_report(report, tmp_path / "out")
    assert json.loads(written["report.json"].read_text()) == json.loads(json.dumps(report))
    png = written["loss_overlay.png"].read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    page = written["report.html"].read_text()
    inlined = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert inlined and base64.b64decode(inlined.group(1)) == png
    # self-contained: nothing is fetched from anywhere
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert "<script" not in page


def test_overlay_marks_the_divergence_and_only_then(tmp_path: Path) -> None:
    assert has_color(render_overlay_png(diverged_report(tmp_path / "d")), DIVERGENCE_COLOR)
    assert not has_color(render_overlay_png(identical_report(tmp_path / "i")), DIVERGENCE_COLOR)


def test_values_from_the_bundle_are_escaped_in_the_page(tmp_path: Path) -> None:
    report = diverged_report(tmp_path)
    report["causes"] = ['library.x: recorded "<script>alert(1)</script>"']
    page = render_html(report, render_overlay_png(report))
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed; .ci must `apt-get install -y chromium`")
    pytest.skip("chromium is not installed (apt-get install -y chromium)")


def browse(page: Path, tmp_path: Path, *action: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "chromium-profile"
    return subprocess.run(
        [
            chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--window-size=1200,1400",
            *action,
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_browser_renders_the_page_to_a_non_blank_screenshot(tmp_path: Path) -> None:
    written = write_report(diverged_report(tmp_path), tmp_path / "out")
    shot = tmp_path / "shot.png"
    result = browse(written["report.html"], tmp_path, f"--screenshot={shot}")
    assert shot.is_file(), result.stderr[-2000:]
    image = pixels(shot.read_bytes())
    assert image.size == (1200, 1400)
    colors = image.getcolors(maxcolors=1 << 20) or []
    assert len(colors) > 50  # text, tables and the inlined plot; a blank page has one colour
    # the verdict badge's red is on screen
    assert any(abs(r - 0xC6) < 8 and abs(g - 0x28) < 8 and abs(b - 0x28) < 8 for _, (r, g, b) in colors)


def test_browser_dom_shows_the_verdict_and_the_first_divergent_step(tmp_path: Path) -> None:
    report = diverged_report(tmp_path)
    written = write_report(report, tmp_path / "out")
    dom = browse(written["report.html"], tmp_path, "--dump-dom").stdout
    assert re.search(r'id="verdict"[^>]*>DIVERGED<', dom)
    assert re.search(r'id="expected"[^>]*>IDENTICAL<', dom)
    assert "loss at step 5" in dom
    assert "PARTIAL REPLAY" not in dom


def test_browser_dom_says_a_partial_replay_is_partial(tmp_path: Path) -> None:
    written = write_report(identical_report(tmp_path, steps=5), tmp_path / "out")
    dom = browse(written["report.html"], tmp_path, "--dump-dom").stdout
    assert re.search(r'id="verdict"[^>]*>IDENTICAL<', dom)
    assert 'id="partial"' in dom and "PARTIAL REPLAY" in dom
    assert "only the first 5 of 12 steps" in dom
