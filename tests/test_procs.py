"""Children die with their parent, and a killed run never clobbers a good file (issue 15).

Each test kills a real servewise process the way users and machines do — ``kill -9``,
SIGTERM from a container stop or a cancelled CI job — and then looks at the process
table and the files. Servers bind 127.0.0.1 with ``--port 0``; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from servewise.profile import load_profile
from servewise.serving import VersionStore

pytestmark = pytest.mark.xdist_group("faults")

PROFILE_ARGS = ["--threads", "1", "--budget-s", "0.3", "--rounds", "1", "--batch-sizes", "1,2,4,8",
                "--seq-lens", "8,16,32", "--decode-batch-sizes", "1,2", "--context-lens", "16,32"]  # fmt: skip


def _children(pid: int) -> list[int]:
    r = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(x) for x in r.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[1].startswith("Z"))  # a zombie is dead


def _wait_gone(pids: list[int], timeout_s: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        left = [p for p in pids if _alive(p)]
        if not left:
            return []
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def _wait_for(cond, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    pytest.fail(f"{what} within {timeout_s:.0f} s")


def _popen(args: list[str], cwd: Path) -> subprocess.Popen:
    # SIGINT/SIGTERM at their default disposition, as a terminal or a container runtime leaves them
    return subprocess.Popen([sys.executable, "-m", "servewise", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip


# --------------------------------------------------------------------------- serve


def test_kill_9_of_the_router_takes_its_workers_with_it(tmp_path: Path) -> None:
    dep = tmp_path / "d.yaml"
    dep.write_text(yaml.safe_dump({"kind": "deployment", "schema_version": 1, "name": "orphans", "replicas": 2,
                                   "service_time": {"distribution": "deterministic", "mean_s": 0.01}}))  # fmt: skip
    ready = tmp_path / "ready.json"
    proc = _popen(["serve", str(dep), "--port", "0", "--mode", "synthetic", "--ready-file", str(ready),
                   "--state-dir", str(tmp_path / "state")], tmp_path)  # fmt: skip
    try:
        _wait_for(ready.exists, 60, "the server was not ready")
        workers = _children(proc.pid)
        assert len(workers) >= 2, workers
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert _wait_gone(workers) == [], "replica workers outlived the router's kill -9"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


# --------------------------------------------------------------------------- rollback


def test_rollback_never_signals_a_process_that_reused_a_dead_servers_pid(tmp_path: Path) -> None:
    """A stale server.json names a PID now held by an unrelated process: it is left alone."""
    from servewise.config import load_deployment

    state = tmp_path / "state"
    for i, mean in enumerate((0.01, 0.02)):
        d = tmp_path / f"d{i}.yaml"
        d.write_text(yaml.safe_dump({"kind": "deployment", "schema_version": 1, "name": "web", "replicas": 1,
                                     "service_time": {"distribution": "deterministic", "mean_s": mean}}))  # fmt: skip
        store = VersionStore(state, "web")
        store.record(load_deployment(d), d)
    # An unrelated process that would die of SIGHUP (the default action), under a recorded
    # identity that is not its own: the server that wrote server.json has died.
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        server_json = store.server_file
        server_json.write_text(json.dumps({"pid": bystander.pid, "identity": "start:1", "url": "http://127.0.0.1:9"}))
        r = subprocess.run([sys.executable, "-m", "servewise", "deploy", "rollback", "--state-dir", str(state)],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert "told the running server" not in r.stdout
        time.sleep(0.3)
        assert bystander.poll() is None, "rollback sent SIGHUP to an unrelated process"
        # The same PID registered by itself (its identity matches) is signalled.
        store.register_server(bystander.pid, "http://127.0.0.1:9")
        assert store.notify_reload() == bystander.pid
        bystander.wait(timeout=5)
        assert bystander.returncode == -signal.SIGHUP
    finally:
        if bystander.poll() is None:
            bystander.kill()
            bystander.wait()


# --------------------------------------------------------------------------- profile


@pytest.fixture(scope="module")
def complete_profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished profile of tiny-gpt2 fp32 made on this machine (what later runs must not clobber)."""
    d = tmp_path_factory.mktemp("base")
    out = d / "p.json"
    r = subprocess.run([sys.executable, "-m", "servewise", "profile", "--model", "builtin:tiny-gpt2",
                        "--variants", "fp32", "--out", str(out), "--quiet", *PROFILE_ARGS],
                       capture_output=True, text=True, timeout=300, cwd=d)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert load_profile(out).status == "complete"
    return out


def _measured_points(path: Path, variant: str | None = None) -> int:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return 0
    return sum(p["status"] == "measured" for v in data["variants"] if variant in (None, v["name"]) for p in v.get("points", []))


@pytest.mark.parametrize(
    ("how", "append"),
    [(signal.SIGTERM, False), (signal.SIGKILL, False), (signal.SIGTERM, True)],
    ids=["sigterm", "kill-9", "sigterm-append"],
)
def test_a_killed_profile_keeps_the_previous_file_and_leaves_no_worker(
    tmp_path: Path, complete_profile: Path, how: int, append: bool
) -> None:
    out = tmp_path / "p.json"
    out.write_bytes(complete_profile.read_bytes())
    before = out.read_bytes()
    partial = tmp_path / "p.partial.json"
    variant = "bf16" if append else "fp32"
    args = ["profile", "--model", "builtin:tiny-gpt2", "--variants", variant,
            "--out", str(out), *PROFILE_ARGS, *(["--append"] if append else [])]  # fmt: skip
    proc = _popen(args, tmp_path)
    try:
        _wait_for(lambda: _measured_points(partial, variant) > 0, 180, "no point was measured")
        workers = _children(proc.pid)
        assert workers, "the profiler runs its measurements in a worker process"
        os.kill(proc.pid, how)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert _wait_gone(workers) == [], "the profiler worker outlived its parent"
    assert out.read_bytes() == before, "the earlier complete profile was overwritten"
    prog = load_profile(partial)
    assert prog.status == "incomplete" and _measured_points(partial) > 0
    if how == signal.SIGTERM:  # SIGTERM stops like Ctrl-C: the partial file is named, exit 130
        assert proc.returncode == 130, err
        assert str(partial) in err and "unchanged" in err, err
    if append:
        assert {v.name for v in prog.variants} >= {"fp32", "bf16"}  # the earlier variant is kept


def test_a_finished_run_replaces_the_file_and_removes_its_partial(tmp_path: Path, complete_profile: Path) -> None:
    out = tmp_path / "p.json"
    out.write_bytes(complete_profile.read_bytes())
    r = subprocess.run([sys.executable, "-m", "servewise", "profile", "--model", "builtin:tiny-gpt2",
                        "--variants", "bf16", "--append", "--out", str(out), "--quiet", *PROFILE_ARGS],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    prof = load_profile(out)
    assert prof.status == "complete" and {v.name for v in prof.variants} == {"fp32", "bf16"}
    assert not (tmp_path / "p.partial.json").exists()


# --------------------------------------------------------------------------- demo


def test_sigterm_to_demo_stops_its_profiler_worker(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = _popen(["demo", "--out", str(out), "--max-requests", "50"], tmp_path)
    try:
        _wait_for(lambda: _measured_points(out / "profile.json") > 0, 240, "the demo measured no point")
        workers = _children(proc.pid)
        assert workers
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 130, err
    assert _wait_gone(workers) == [], "the profiler worker outlived the demo"


def test_demo_refuses_bad_inputs_before_profiling(tmp_path: Path) -> None:
    """Each bad input is one line and exit 2 in seconds, before a 100 s profile starts."""
    bad_space = tmp_path / "bad.yaml"
    bad_space.write_text("kind: search_space\nschema_version: 1\nname: x\nnonsense: 1\n")
    for args, flag in ((["--max-requests", "0"], "--max-requests"), (["--rate-scale", "-1"], "--rate-scale"),
                       (["--space", str(bad_space)], str(bad_space))):  # fmt: skip
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "servewise", "demo", "--out", str(tmp_path / "o"), *args],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)  # fmt: skip
        assert r.returncode == 2, r.stderr
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and flag in lines[0], r.stderr
        assert not (tmp_path / "o" / "profile.json").exists()
        assert time.monotonic() - t0 < 60
