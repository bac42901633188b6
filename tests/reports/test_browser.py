"""The report in a real browser: Debian's headless Chromium, driven by Playwright.

The page loads from disk with no console error, no page error and no request other
than the page itself and its ``data:`` images; every image decodes to a picture of
its own size; a user string with markup shows as text and runs nothing; and a full-page
screenshot is written. ``.ci/run`` installs Chromium; without it this test is skipped
locally and fails in CI (``CI`` set), so a missing browser never passes silently there.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from _make import make_profile, make_variant, real_artifacts
from PIL import Image

from servewise import reports

pytestmark = pytest.mark.xdist_group("serving")

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def _browser_or_skip() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("playwright is not installed (the dev extra installs it)")
        pytest.skip("playwright is not installed: pip install -e '.[dev]'")
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("Debian's chromium is not installed: apt-get install chromium (.ci/run does)")
    return sync_playwright


def _open(page_path: Path, shot: Path) -> dict[str, Any]:
    sync_playwright = _browser_or_skip()
    seen: dict[str, Any] = {"console": [], "errors": [], "failed": [], "requests": [], "dialogs": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: seen["console"].append((m.type, m.text)))
            page.on("pageerror", lambda e: seen["errors"].append(str(e)))
            page.on("requestfailed", lambda r: seen["failed"].append((r.url, r.failure)))
            page.on("request", lambda r: seen["requests"].append(r.url))
            page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
            response = page.goto(page_path.as_uri(), wait_until="load")
            seen["ok"] = response is not None and response.ok
            seen["images"] = page.evaluate(
                """async () => Promise.all(Array.from(document.images).map(async (img) => {
                       try { await img.decode(); } catch (e) { return {src: img.src.slice(0, 40), decoded: false}; }
                       return {decoded: img.complete, w: img.naturalWidth, h: img.naturalHeight,
                               shown: img.getBoundingClientRect().width};
                   }))"""
            )
            seen["scripts"] = page.evaluate("document.scripts.length")
            seen["text"] = page.evaluate("document.body.innerText")
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    return seen


def test_the_report_in_headless_chromium(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    arts = real_artifacts(tmp_path_factory.mktemp("artifacts"))
    page_path = tmp_path / "report.html"
    reports.write_report([arts[k] for k in ("profile", "sim", "plan", "predicted", "measured", "validation")], page_path)
    shot = tmp_path / "report.png"
    seen = _open(page_path, shot)
    assert seen["ok"]
    assert [m for m in seen["console"] if m[0] in ("error", "warning")] == [] and seen["errors"] == []
    assert seen["failed"] == []
    assert [u for u in seen["requests"] if not u.startswith(("file://", "data:"))] == []
    assert [u for u in seen["requests"] if u.startswith("file://")] == [page_path.as_uri()]
    assert len(seen["images"]) >= 10
    for img in seen["images"]:
        assert img["decoded"] and img["w"] > 300 and img["h"] > 100 and img["shown"] > 0, img
    assert seen["scripts"] == 0
    with Image.open(shot) as im:
        assert im.format == "PNG" and im.size[0] == 1280 and im.size[1] > 5000


def test_markup_in_an_artifact_shows_as_text_and_runs_nothing(tmp_path: Path) -> None:
    evil = "<script>alert('x')</script><img src=x onerror=alert(1)>"
    prof = make_profile(tmp_path / "p.json", [make_variant("fp32", model=evil)])
    page_path = reports.write_report([prof], tmp_path / "r.html")
    seen = _open(page_path, tmp_path / "shot.png")
    assert seen["dialogs"] == [] and seen["scripts"] == 0 and seen["failed"] == []
    assert evil in seen["text"]
    assert [u for u in seen["requests"] if not u.startswith("data:")] == [page_path.as_uri()]
