"""``ServeSettings``: how ``servewise serve`` runs a deployment (no aiohttp here)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ServeSettings"]


class ServeSettings(BaseModel):
    """How ``servewise serve`` runs a deployment (the CLI's options), validated on creation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port (0: any free port).")
    mode: Literal["auto", "real", "synthetic"] = "auto"
    """``real`` runs the profiled model; ``synthetic`` sleeps its service times; ``auto``: real with a model."""
    replicas: int | None = Field(default=None, ge=0)
    """Start this many replicas of each served pool (overrides the deployment)."""
    pool: str | None = None
    """Serve only this pool (one container of a multi-pool plan)."""
    token: str | None = None
    """Bearer token every request but ``/healthz`` must carry."""
    max_body_bytes: int = Field(default=1 << 20, gt=0)
    max_tokens: int = Field(default=4096, ge=1)
    """Largest ``max_tokens`` a request may ask for."""
    max_pending: int | None = Field(default=None, ge=1)
    """Requests inside the router at once; more get 429 (default: from the queue capacities)."""
    upstream_timeout_s: float | None = Field(default=None, gt=0)
    """Longest a replica may stay silent on one request before it counts as hung: it is ejected
    and the request retried on another replica (``faults.max_retries``), each time counted in
    ``servewise_errors_total{reason="timeout"}``. It bounds the whole answer, and for a stream
    each wait between two reads, so a stream that stalls is caught too. Default (None), at
    least 30 s: 10 × the SLO's largest ``p*_latency_s`` limit; without one, 10 × the slowest of
    200 seeded draws of a full batch (``max_batch_size`` requests of the longest profiled input,
    1024 tokens without a profile; decoders generate ``max_tokens``) on the slowest pool, times
    (1 + the full batches a full queue holds ahead of a request per slot; an unbounded queue
    counts as 256 requests)."""
    header_timeout_s: float = Field(default=10.0, gt=0)
    """A connection has this long, from its opening or its previous answer, to send a whole request
    line and headers; else it is closed (slow-loris guard; also the keep-alive idle limit)."""
    body_timeout_s: float = Field(default=30.0, gt=0)
    """A client has this long to send its request body once its headers are in; else 408 and the
    connection is closed."""
    health_interval_s: float = Field(default=1.0, gt=0)
    eject_after: int = Field(default=2, ge=1)
    """Consecutive failed health checks that eject a replica."""
    drain_timeout_s: float = Field(default=30.0, ge=0)
    log_path: Path | None = None
    log_sample: float = Field(default=1.0, ge=0, le=1)
    log_redact: bool = True
    threads: int | None = Field(default=None, ge=1)
    """Intra-op threads per worker (default: the host's usable CPUs ÷ the most replicas that run at once, >= 1)."""
    seed: int = 0
    workdir: Path | None = None
    worker_log: Path | None = None
    """Append the workers' stderr here (default: discarded)."""
