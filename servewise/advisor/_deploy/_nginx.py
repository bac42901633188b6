"""``nginx.conf``: the front of ``docker-compose.yaml``, with the plan's balancer in nginx terms.

One ``upstream`` holds every replica container; the plan's balancer becomes nginx's
balancing directive (:func:`balance`), ``queue.capacity`` a ``max_conns`` per server
(excess answered 429), ``faults`` the retry policy, and an exact-match ``cache`` a
``proxy_cache`` keyed on the request key header. Where nginx has no equivalent the file
says so in a ``# no nginx equivalent of ...`` comment and uses the closest directive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from servewise.advisor._deploy._common import Target, comment, fmt, integer_weights, replica_services

LISTEN_PORT = 8080
KEY_HEADER = "X-Servewise-Key"
"""Clients send the request key (the trace's ``key``) in this header."""
KEY_VAR = "$http_x_servewise_key"
CACHE_DIR = "/var/cache/nginx/servewise"
KEYS_PER_MB = 8000
"""nginx: one megabyte of keys zone holds about 8 000 cache keys."""
_NOT_SEEN = {
    "least_kv": "it picks the replica with the least KV-cache load, which nginx cannot see",
    "prefix_affinity": "it routes to the replica holding the prompt's cached prefix, which nginx cannot see",
}


@dataclass
class Balance:
    """The plan's balancer in nginx terms."""

    directive: str | None
    """The upstream's balancing directive (None: nginx's default round-robin)."""
    notes: list[str] = field(default_factory=list)
    http: list[str] = field(default_factory=list)
    """Lines the directive needs at http level (a map)."""
    weights: list[int] | None = None
    """Per-pool ``weight=`` (weighted only)."""


def balance(t: Target) -> Balance:
    """Map the deployment's balancer to an nginx upstream directive."""
    b = t.dep.balancer
    policy = b.policy
    if policy == "round_robin":
        return Balance(None, ["round_robin: nginx's default (round-robin), no directive."])
    if policy == "least_outstanding":
        return Balance("least_conn;", ["least_outstanding: least_conn (fewest active connections)."])
    if policy == "random":
        return Balance("random;", ["random: a uniformly random replica."])
    if policy == "p2c":
        return _p2c(t, b.d if b.d is not None else 2)
    if policy == "consistent_hash":
        return _consistent_hash(b.virtual_nodes, b.load_bound)
    if policy == "weighted":
        pools = list(t.pools)
        weights = integer_weights([p.weight for p in pools])
        shown = ", ".join(f"{p.pool.name} {fmt(p.weight)} -> {w}" for p, w in zip(pools, weights, strict=True))
        return Balance(
            None,
            [
                f"weighted: weight=N on each server from the pool weights (Pool.weight, else speed_factor x concurrency): {shown}."
            ],
            weights=weights,
        )
    why = _NOT_SEEN.get(policy, "it is not one of nginx's balancing methods")
    return Balance("least_conn;", [f"no nginx equivalent of {policy}: {why}; least_conn is the closest."])


def _p2c(t: Target, d: int) -> Balance:
    total = sum(p.replicas for p in t.pools)
    if d == 1:
        return Balance("random;", ["p2c with d=1 is random."])
    if t.dep.scaling.mode == "fixed" and d >= total:
        return Balance("least_conn;", [f"p2c with d={d} >= {total} replicas compares them all: least_conn."])
    notes = ["p2c: random two least_conn (two random replicas, the one with fewer connections)."]
    if d != 2:
        notes.append(f"p2c with d={d}: nginx samples two replicas, not {d}.")
    return Balance("random two least_conn;", notes)


def _consistent_hash(virtual_nodes: int | None, load_bound: float | None) -> Balance:
    notes = [
        f"consistent_hash: clients send the request key in header {KEY_HEADER}; a request without one hashes "
        "its $request_id (spread at random, as servewise hashes the request id).",
        "nginx's ketama ring places 160 points per server"
        + (f" (virtual_nodes={virtual_nodes} is not configurable)." if virtual_nodes is not None else "."),
    ]
    if load_bound is not None:
        notes.append(
            f"no nginx equivalent of load_bound={fmt(load_bound)} (bounded loads): a hot key stays on its replica."
        )
    mapping = [
        "map $http_x_servewise_key $servewise_hash_key {",
        '    ""      $request_id;',
        f"    default {KEY_VAR};",
        "}",
    ]
    return Balance("hash $servewise_hash_key consistent;", notes, http=mapping)


# --------------------------------------------------------------------------- the file


def nginx_conf(t: Target) -> str:
    """The full ``nginx.conf``."""
    body = [
        *comment(
            f"servewise plan {t.dep.name!r}: nginx in front of the replicas of docker-compose.yaml, "
            f"on port {LISTEN_PORT}.",
            "Upstream host names are the compose services; nginx resolves them when it starts.",
        ).splitlines(),
        "worker_processes auto;",
        "",
        "events {",
        "    worker_connections 4096;",
        "}",
        "",
        "http {",
        *_indent(_http(t)),
        "}",
    ]
    return "\n".join(body) + "\n"


def _indent(lines: list[str], n: int = 4) -> list[str]:
    return [(" " * n + line) if line else "" for line in lines]


def _http(t: Target) -> list[str]:
    bal = balance(t)
    lines = [*bal.http]
    cache = _cache_http(t)
    lines += cache
    if lines:
        lines.append("")
    lines += ["upstream servewise {", *_indent(_upstream(t, bal)), "}", "", "server {", *_indent(_server(t)), "}"]
    return lines


def _upstream(t: Target, bal: Balance) -> list[str]:
    lines = comment(*bal.notes).splitlines()
    lines.append("zone servewise 256k;  # shared by the workers: max_conns and least_conn count across them")
    if bal.directive is not None:
        lines.append(bal.directive)
    cap = t.dep.queue.capacity
    if cap is not None:
        lines += comment(
            f"queue.capacity={cap}: max_conns = in-service slots + {cap} queued per replica. Open-source nginx "
            "has no queue: a request finding every server full gets 502, answered as 429 (error_page)."
        ).splitlines()
    weight_of = {p.pool.name: w for p, w in zip(t.pools, bal.weights, strict=True)} if bal.weights else {}
    for p, host in replica_services(t):
        params = ""
        if p.pool.name in weight_of:
            params += f" weight={weight_of[p.pool.name]}"
        if cap is not None:
            params += f" max_conns={p.slots + cap}"
        lines.append(f"server {host}:{t.port}{params};")
    lines.append("keepalive 64;")
    return lines


def _server(t: Target) -> list[str]:
    lines = [
        f"listen {LISTEN_PORT};",
        "client_max_body_size 16m;",
        "",
        "location = /nginx-healthz {",
        "    access_log off;",
        '    return 200 "ok\\n";',
        "}",
        "",
        "location / {",
        *_indent(_location(t)),
        "}",
    ]
    if t.dep.queue.capacity is not None:
        lines += [
            "",
            "error_page 502 =429 @overloaded;",
            "location @overloaded {",
            "    default_type application/json;",
            '    return 429 \'{"detail": "overloaded: every replica is full"}\\n\';',
            "}",
        ]
    return lines


def _location(t: Target) -> list[str]:
    lines = [
        "proxy_pass http://servewise;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_set_header Host $host;",
        "proxy_set_header X-Request-Id $request_id;",
        "proxy_connect_timeout 5s;",
        "proxy_read_timeout 300s;",
        "proxy_send_timeout 300s;",
    ]
    if t.dep.cache is None:
        lines.append("proxy_buffering off;  # pass streamed tokens on as they come")
    else:
        lines += comment("proxy_buffering stays on: nginx caches only buffered responses.").splitlines()
    lines += _retries(t)
    lines += _cache_location(t)
    return lines


def _retries(t: Target) -> list[str]:
    f = t.dep.faults
    if f is None:
        return [
            *comment(
                "no faults in the plan: a request moves on only when its replica refuses or times out."
            ).splitlines(),
            "proxy_next_upstream error timeout http_502 http_503;",
        ]
    if f.on_failure == "fail":
        return [
            *comment(
                "faults.on_failure=fail: a request already sent to a failed replica fails (nginx does not resend a "
                "POST); one that could not be sent moves on."
            ).splitlines(),
            "proxy_next_upstream error timeout http_502 http_503;",
        ]
    return [
        *comment(
            f"faults.on_failure=retry, max_retries={f.max_retries}: up to {f.max_retries + 1} tries in all, "
            "POSTs included (non_idempotent)."
        ).splitlines(),
        "proxy_next_upstream error timeout http_502 http_503 non_idempotent;",
        f"proxy_next_upstream_tries {f.max_retries + 1};",
    ]


# --------------------------------------------------------------------------- response cache


def _duration(seconds: float) -> str:
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{max(1, round(seconds * 1000))}ms"


def _cache_http(t: Target) -> list[str]:
    c = t.dep.cache
    if c is None:
        return []
    zone_mb = max(1, math.ceil(c.capacity / KEYS_PER_MB))
    inactive = _duration(c.ttl_s) if c.ttl_s is not None else "365d"
    notes = [
        f"cache ({c.policy}, {c.capacity} entries): the exact-match response cache, keyed on {KEY_HEADER} as in "
        f"servewise; a keys zone of {zone_mb} MB holds about {zone_mb * KEYS_PER_MB} keys and nginx drops the "
        "least recently used key when it is full.",
    ]
    if c.policy == "fifo":
        notes.append("no nginx equivalent of fifo eviction: nginx evicts the least recently used entry.")
    if c.hit_latency_s > 0:
        notes.append(f"hit_latency_s={fmt(c.hit_latency_s)} is the plan's estimate; nginx answers hits from disk.")
    return [
        *comment(*notes).splitlines(),
        f"proxy_cache_path {CACHE_DIR} levels=1:2 keys_zone=servewise_cache:{zone_mb}m inactive={inactive} "
        "use_temp_path=off;",
        "map $http_x_servewise_key $servewise_no_cache {",
        '    ""      1;',
        "    default 0;",
        "}",
    ]


def _cache_location(t: Target) -> list[str]:
    c = t.dep.cache
    if c is None:
        return []
    valid = _duration(c.ttl_s) if c.ttl_s is not None else "365d"
    return [
        *comment("requests without a key bypass the cache.").splitlines(),
        "proxy_cache servewise_cache;",
        "proxy_cache_methods GET HEAD POST;",
        f'proxy_cache_key "$request_method$uri {KEY_VAR}";',
        f"proxy_cache_valid 200 {valid};",
        "proxy_cache_bypass $servewise_no_cache;",
        "proxy_no_cache $servewise_no_cache;",
        "proxy_ignore_headers Cache-Control Expires Set-Cookie;",
        "add_header X-Cache-Status $upstream_cache_status always;",
    ]
