"""``servewise report``: one self-contained page per run, for every kind of artifact.

The artifacts are made by the real commands (simulate, advise, validate); the page is
read back with an HTML parser and checked against them: it loads nothing (every image
a PNG ``data:`` URI that decodes, no script, a CSP that forbids the rest), every link
opens a file that exists, the numbers it shows are the artifacts' own, every
user-supplied string reaches the reader as text, and a validation's verdict comes first.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pytest
from _make import edit_json, make_profile, make_variant, real_artifacts
from PIL import Image

pytestmark = pytest.mark.xdist_group("serving")


@pytest.fixture(scope="module")
def arts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return real_artifacts(tmp_path_factory.mktemp("artifacts"))


class Page(HTMLParser):
    """What a page holds: its tags, attributes, text, and the numbers of its cells."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def all(self, tag: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag]

    @property
    def values(self) -> list[float]:
        return [float(a["data-value"]) for _, a in self.tags if a.get("data-value")]

    @property
    def joined(self) -> str:
        return " ".join(" ".join(self.text).split())


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "servewise", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def _report(paths: list[Path], out: Path, *extra: str) -> Page:
    r = _cli("report", *map(str, paths), "--out", str(out), *extra, cwd=out.parent)
    assert r.returncode == 0, r.stdout + r.stderr
    return Page(out.read_text())


def _has(values: list[float], x: float) -> bool:
    return any(abs(v - x) <= 1e-9 * max(abs(x), 1e-12) for v in values)


def test_one_self_contained_page_for_every_kind(arts: dict[str, Path], tmp_path: Path) -> None:
    page_path = tmp_path / "nested" / "report.html"
    page_path.parent.mkdir()
    kinds = ["profile", "sim", "plan", "predicted", "measured", "validation"]
    page = _report([arts[k] for k in kinds], page_path)
    html = page_path.read_text()
    assert html.startswith("<!DOCTYPE html>")
    # loads nothing: no script, no stylesheet or frame, every image a PNG inside the page
    assert not page.all("script") and not page.all("iframe") and not page.all("link")
    csp = [m for m in page.all("meta") if m.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0]["content"] and "img-src data:" in csp[0]["content"]
    imgs = page.all("img")
    assert len(imgs) >= 10
    for img in imgs:
        assert img["src"].startswith("data:image/png;base64,") and img["alt"]
        im = Image.open(io.BytesIO(base64.b64decode(img["src"].split(",", 1)[1])))
        im.verify()
        assert im.format == "PNG" and im.size[0] > 300
    # a section per artifact, each named in the contents
    ids = [a["id"] for a in page.all("section")]
    assert ids == ["profile-1", "sim-result-2", "plan-3", "sim-result-4", "measured-5", "validation-6"]
    anchors = {a["href"] for a in page.all("a") if a["href"].startswith("#")}
    assert {f"#{i}" for i in ids} <= anchors
    # every other link is relative and opens a file or folder that exists
    links = [a["href"] for a in page.all("a") if not a["href"].startswith("#")]
    assert links and all("://" not in h and not h.startswith("/") for h in links)
    for h in links:
        assert (page_path.parent / unquote(h)).exists(), h
    linked = {(page_path.parent / unquote(h)).resolve() for h in links}
    for k in kinds:
        art = arts[k] if arts[k].is_file() else next(p for p in arts[k].glob("*.json"))
        assert art.resolve() in linked, k
    assert (arts["plan"] / "deploy" / "k8s.yaml").resolve() in linked
    assert (arts["sim"] / "requests.csv").resolve() in linked


def test_the_numbers_shown_are_the_artifacts(arts: dict[str, Path], tmp_path: Path) -> None:
    page = _report([arts["sim"], arts["plan"], arts["validation"], arts["profile"]], tmp_path / "r.html")
    v = page.values
    sim = json.loads((arts["sim"] / "result.json").read_text())["summary"]
    for key in ("p50", "p95", "p99", "max"):
        assert _has(v, sim["latency_s"][key]), key
    for key in ("throughput_rps", "cache_hit_ratio", "cost_usd", "cost_per_hour_usd", "utilisation"):
        assert _has(v, sim[key]), key
    plan = json.loads((arts["plan"] / "plan.json").read_text())
    winner = next(c for c in plan["candidates"] if c["id"] == plan["winner"])
    assert _has(v, winner["cost_per_hour_usd"]) and _has(v, winner["metrics"]["latency_s"]["p95"])
    assert winner["label"] in page.joined
    val = json.loads((arts["validation"] / "validation.json").read_text())
    for m in val["metrics"].values():
        assert _has(v, m["predicted"]) and _has(v, m["measured"]) and _has(v, m["relative_error"])
    prof = json.loads(arts["profile"].read_text())
    for var in prof["variants"]:
        assert _has(v, var["load_time_s"]) and _has(v, var["peak_mem_bytes"])


def test_a_validation_verdict_heads_the_page(arts: dict[str, Path], tmp_path: Path) -> None:
    page_path = tmp_path / "r.html"
    _report([arts["profile"], arts["plan"], arts["validation"]], page_path)
    html = page_path.read_text()
    verdict = json.loads((arts["validation"] / "validation.json").read_text())["verdict"]
    first = html.index('class="verdict')
    assert first < html.index("Contents") < html.index('id="profile-1"')
    assert f'class="verdict {verdict} large"' in html[first : first + 60]
    assert f"Validation {verdict.upper()}" in html[first : first + 300]


def test_a_plan_with_no_winner_says_fail_and_shows_the_closest(arts: dict[str, Path], tmp_path: Path) -> None:
    plan = json.loads((arts["plan"] / "plan.json").read_text())
    closest = plan["ranking"][:2]

    def no_winner(doc: dict[str, Any]) -> None:
        doc.update(winner=None, feasible=False, closest=closest, pareto=[])
        for c in doc["candidates"]:
            c["feasible"] = False

    edited = edit_json(arts["plan"] / "plan.json", tmp_path / "plan" / "plan.json", no_winner)
    page = _report([edited], tmp_path / "r.html")
    text = page.joined
    assert "FAIL" in text and "no candidate meets every SLO" in text and "Closest candidates" in text
    labels = {c["id"]: c["label"] for c in plan["candidates"]}
    assert all(labels[c] in text for c in closest)


def test_every_user_string_is_escaped(arts: dict[str, Path], tmp_path: Path) -> None:
    evil_model = "<script>alert('model')</script>"
    evil_variant = '"><img src=x onerror=alert(1)>$x$'
    prof = make_profile(tmp_path / "evil-profile.json", [make_variant(evil_variant, model=evil_model)])
    evil_name = "<b onmouseover=alert(2)>dep</b> & co"

    def rename(doc: dict[str, Any]) -> None:
        doc["metadata"]["deployment_name"] = evil_name
        doc["metadata"]["trace_source"] = "</td></tr></table><script>alert(3)</script>"

    sim = tmp_path / "evil sim <x>"
    sim.mkdir()
    edit_json(arts["sim"] / "result.json", sim / "result.json", rename)
    shutil.copy(arts["sim"] / "requests.csv", sim / "requests.csv")
    page_path = tmp_path / "r.html"
    page = _report([prof, sim], page_path, "--title", "<i>title</i>")
    html = page_path.read_text()
    # no element the strings could have made: no script, no image that is not ours, no handler
    assert not page.all("script") and not page.all("b") and not page.all("i")
    assert all(img["src"].startswith("data:image/png;base64,") for img in page.all("img"))
    assert not any(k.startswith("on") for _, attrs in page.tags for k in attrs)
    # ... and the reader sees each string as written
    text = page.joined
    for s in (evil_model, evil_variant, evil_name, "<i>title</i>"):
        assert s in text, s
    assert "&lt;script&gt;alert(&#39;model&#39;)&lt;/script&gt;" in html
    # the folder name with markup is linked URL-encoded and still opens
    assert any(unquote(a["href"]).endswith("evil sim <x>/result.json") for a in page.all("a"))


def test_a_loop_folder_stands_for_its_stages(arts: dict[str, Path], tmp_path: Path) -> None:
    root = arts["validation"].parent
    loop = {
        "kind": "loop",
        "schema_version": 1,
        "artifacts": {
            "profile": "profile.json", "plan": "plan/plan.json", "predicted": "val/predicted/result.json",
            "measured": "val/measured/measured.json", "validation": "val/validation.json",
        },
    }  # fmt: skip
    (root / "loop.json").write_text(json.dumps(loop))
    try:
        page = _report([root], tmp_path / "r.html")
    finally:
        (root / "loop.json").unlink()
    assert [a["id"] for a in page.all("section")] == ["profile-1", "plan-2", "sim-result-3", "measured-4", "validation-5"]


@pytest.mark.parametrize(
    "content, expected",
    [
        ('{"kind": "nope", "schema_version": 1}', "not a servewise artifact (kind 'nope'"),
        ('{"kind": "sim_result", "schema_version": 99}', "schema_version"),
        ("{not json", "not valid JSON"),
    ],
)
def test_unusable_input_is_one_line_and_exit_2(tmp_path: Path, content: str, expected: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    r = _cli("report", str(bad), "--out", str(tmp_path / "r.html"), cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and expected in lines[0], r.stderr
    assert not (tmp_path / "r.html").exists()


def test_missing_file_and_folder_out_are_refused(tmp_path: Path, arts: dict[str, Path]) -> None:
    r = _cli("report", str(tmp_path / "absent.json"), "--out", str(tmp_path / "r.html"), cwd=tmp_path)
    assert r.returncode == 2 and "no such file or folder" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = _cli("report", str(arts["profile"]), "--out", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 2 and "is a folder" in r.stderr


def test_time_averaged_queue_matches_brute_force() -> None:
    from servewise.reports._view_run import mean_count as _mean_count

    rng = np.random.default_rng(0)
    enter = rng.uniform(0, 100, 500)
    leave = enter + rng.exponential(3.0, 500)
    edges = np.arange(0.0, 110.0, 2.5)
    got = _mean_count(enter, leave, edges)
    fine = (np.arange(1_100_000) + 0.5) * 1e-4  # midpoints of 0.1 ms steps
    count = np.searchsorted(np.sort(enter), fine, side="right") - np.searchsorted(np.sort(leave), fine, side="right")
    want = [count[(fine >= lo) & (fine < hi)].mean() for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    np.testing.assert_allclose(got, want, atol=0.01)


def test_a_thinned_cdf_keeps_exact_points_of_the_full_one() -> None:
    from servewise.reports._plots import ecdf

    v = np.random.default_rng(1).lognormal(0, 1, 100_000)
    x, y = ecdf(v, max_points=1000)
    assert 990 <= len(x) <= 1000 and x[0] == v.min() and x[-1] == v.max() and y[-1] == 1.0
    # every kept point is a point of the exact ECDF: P(V <= x) = y
    np.testing.assert_allclose([(v <= xi).mean() for xi in x[::50]], y[::50])


def test_a_parquet_run_shows_the_same_per_request_section_as_its_csv(arts: dict[str, Path], tmp_path: Path) -> None:
    """``simulate --requests-format parquet``: the report reads requests.parquet and links it."""
    import pandas as pd

    from servewise.results import read_requests

    pq = tmp_path / "pq"
    pq.mkdir()
    shutil.copy(arts["sim"] / "result.json", pq / "result.json")
    read_requests(arts["sim"] / "requests.csv").to_parquet(pq / "requests.parquet", index=False)
    a = _report([arts["sim"]], tmp_path / "csv.html")
    b = _report([pq], tmp_path / "pq.html")
    assert len(b.all("img")) == len(a.all("img"))  # the plots built from the per-request table are there
    hrefs = {h["href"] for h in b.all("a")}
    assert any(h.endswith("requests.parquet") for h in hrefs), hrefs
    assert isinstance(read_requests(pq / "requests.parquet"), pd.DataFrame)
