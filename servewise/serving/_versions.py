"""Deployment versions kept on disk: what ran, when, and a way back.

Layout under the state folder (``--state-dir``, default ``.servewise``)::

    deployments/<name>/
        history.json            every version, oldest first, and which one is current
        v0001/deployment.yaml   the deployment as served (model.profile -> profile.json)
        v0001/profile.json      a copy of its profile (when it names one)
        server.json             the running server of this name (pid, url), if any

``servewise serve D.yaml`` records ``D.yaml`` as a new version when its content differs
from the current one (the same content is not recorded twice, like ``kubectl apply``).
``servewise deploy rollback`` makes an earlier version current again by recording it as
a new version (``rollback_of``), like ``kubectl rollout undo``; a running server of that
name is told to reload (SIGHUP) and rolls its replicas onto it. Every file is written
atomically; ``history.json`` is written last, so a crash never points at a half version.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servewise.config import Deployment, dump_deployment, load_deployment
from servewise.errors import ArtifactError, ConfigError
from servewise.io import atomic_write_text, read_json, write_json
from servewise.procs import process_identity

__all__ = ["Version", "VersionStore", "DEFAULT_STATE_DIR"]

DEFAULT_STATE_DIR = Path(".servewise")
_KIND = "deployment_history"
_SCHEMA = 1


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _slug(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return s or "deployment"


@dataclass(frozen=True)
class Version:
    """One recorded version of a deployment."""

    version: int
    sha256: str
    created_utc: str
    source: str
    rollback_of: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "sha256": self.sha256,
            "created_utc": self.created_utc,
            "source": self.source,
            "rollback_of": self.rollback_of,
        }


class VersionStore:
    """The versions of one deployment name under ``state_dir``."""

    def __init__(self, state_dir: Path, name: str) -> None:
        self.name = name
        self.dir = Path(state_dir) / "deployments" / _slug(name)
        self._history = self.dir / "history.json"

    # ------------------------------------------------------------------ reading

    def _read(self) -> tuple[list[Version], int | None]:
        if not self._history.exists():
            return [], None
        data = read_json(self._history, "deployment history")
        if not isinstance(data, dict) or data.get("kind") != _KIND or data.get("schema_version") != _SCHEMA:
            raise ArtifactError(f"{self._history}: not a servewise deployment history (kind {_KIND}, schema {_SCHEMA})")
        versions = [Version(**v) for v in data.get("versions", [])]
        return versions, data.get("current")

    def history(self) -> list[Version]:
        """Every version, oldest first."""
        return self._read()[0]

    def current(self) -> Version | None:
        versions, cur = self._read()
        return next((v for v in versions if v.version == cur), None)

    def path(self, version: int) -> Path:
        """The ``deployment.yaml`` of ``version``."""
        return self.dir / f"v{version:04d}" / "deployment.yaml"

    def load(self, version: int) -> Deployment:
        p = self.path(version)
        if not p.exists():
            raise ConfigError(f"deployment {self.name!r} has no version {version} (see: servewise deploy history)")
        return load_deployment(p)

    # ------------------------------------------------------------------ writing

    def _write(self, versions: list[Version], current: int) -> None:
        write_json(
            self._history,
            {
                "schema_version": _SCHEMA,
                "kind": _KIND,
                "name": self.name,
                "current": current,
                "versions": [v.to_json() for v in versions],
            },
        )

    def record(self, deployment: Deployment, source: Path) -> tuple[Version, bool]:
        """Record ``deployment`` (read from ``source``) as current; (version, whether it is new)."""
        text = dump_deployment(_profile_beside(deployment))
        profile_text = _profile_text(deployment, source)
        digest = hashlib.sha256((text + (profile_text or "")).encode()).hexdigest()
        versions, cur = self._read()
        current = next((v for v in versions if v.version == cur), None)
        if current is not None and current.sha256 == digest:
            return current, False
        number = max((v.version for v in versions), default=0) + 1
        self._store(number, text, profile_text)
        v = Version(number, digest, _utc_now(), str(source.resolve()))
        self._write([*versions, v], number)
        return v, True

    def rollback(self, to: int | None = None) -> Version:
        """Make version ``to`` (default: the one before the current) current, as a new version."""
        versions, cur = self._read()
        if not versions:
            raise ConfigError(f"deployment {self.name!r} has no recorded versions in {self.dir}")
        current = next((v for v in versions if v.version == cur), versions[-1])
        if to is None:
            older = [v for v in versions if v.version < current.version and v.sha256 != current.sha256]
            if not older:
                raise ConfigError(f"deployment {self.name!r}: no earlier version to roll back to (current is v{current.version})")
            target = older[-1]
        else:
            found = next((v for v in versions if v.version == to), None)
            if found is None:
                have = ", ".join(str(v.version) for v in versions)
                raise ConfigError(f"deployment {self.name!r} has no version {to}; versions: {have}")
            target = found
        if target.sha256 == current.sha256:
            raise ConfigError(f"deployment {self.name!r}: version {target.version} is already what is current")
        src = self.path(target.version)
        number = max(v.version for v in versions) + 1
        profile = src.parent / "profile.json"
        self._store(number, src.read_text(), profile.read_text() if profile.exists() else None)
        v = Version(number, target.sha256, _utc_now(), target.source, rollback_of=target.version)
        self._write([*versions, v], number)
        return v

    def _store(self, number: int, text: str, profile_text: str | None) -> None:
        d = self.dir / f"v{number:04d}"
        if profile_text is not None:
            atomic_write_text(d / "profile.json", profile_text)
        atomic_write_text(d / "deployment.yaml", text)

    # ------------------------------------------------------------------ the running server

    @property
    def server_file(self) -> Path:
        return self.dir / "server.json"

    def register_server(self, pid: int, url: str) -> None:
        write_json(
            self.server_file,
            {"pid": pid, "identity": process_identity(pid), "url": url, "started_utc": _utc_now()},
        )

    def unregister_server(self, pid: int) -> None:
        info = self.running_server()
        if info is not None and info.get("pid") == pid:
            self.server_file.unlink(missing_ok=True)

    def running_server(self) -> dict[str, Any] | None:
        """The live server of this deployment, or None.

        A ``server.json`` left by a server that died is stale: its PID may since have gone
        to an unrelated process. The PID counts only while that process is the one that
        registered (same start time), so nothing else is ever signalled.
        """
        try:
            info = json.loads(self.server_file.read_text())
            pid = int(info["pid"])
            recorded = info["identity"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if recorded is None or process_identity(pid) != recorded:
            return None
        return dict(info)

    def notify_reload(self) -> int | None:
        """Send SIGHUP to the running server (it reloads the current version); its pid, or None."""
        info = self.running_server()
        if info is None:
            return None
        pid = int(info["pid"])
        os.kill(pid, signal.SIGHUP)
        return pid


def _profile_beside(dep: Deployment) -> Deployment:
    """``dep`` with ``model.profile`` pointing at ``profile.json`` in the same folder."""
    if dep.model is None:
        return dep
    model = dep.model.model_copy(update={"profile": "profile.json"})
    return dep.model_copy(update={"model": model})


def _profile_text(dep: Deployment, source: Path) -> str | None:
    if dep.model is None:
        return None
    p = Path(dep.model.profile)
    p = p if p.is_absolute() else source.parent / p
    try:
        return p.read_text()
    except OSError as err:
        raise ConfigError(f"{source}: model.profile {dep.model.profile!r} cannot be read ({err})") from None
