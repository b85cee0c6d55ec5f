"""The cluster configuration file (`cluster.toml`) and the replica's settings.

Example::

    cluster_id = "rsm-5f1c"
    app = "examples.kvstore.machine:KVStore"
    secret_file = "cluster.secret"     # relative to this file; mode 0600
    tick_ms = 20

    [replicas.n1]
    peer = "127.0.0.1:7100"            # replica-to-replica (Raft) address
    client = "127.0.0.1:7101"          # client address
    data = "data/n1"                   # data directory, relative to this file

    [tls]                              # optional: mutual TLS under the HMAC handshake
    ca = "tls/ca.pem"                  # the CA every certificate must chain to
    cert = "tls/node.pem"              # this replica's certificate (or per replica:
    key = "tls/node.key"               #   tls_cert / tls_key in [replicas.ID])

    [consensus]                        # optional: rsm.consensus.Config fields
    election_timeout_ticks = 10

    [replica]                          # optional: ReplicaSettings fields
    snapshot_every_entries = 10000

The set of `[replicas.*]` tables is the initial membership; later membership
changes are recorded in the replicated log, not in this file.
"""

from __future__ import annotations

import importlib
import os
import secrets
import ssl
import stat
import tomllib
from pathlib import Path
from typing import Any

import attrs

from rsm.consensus.config import Config
from rsm.errors import ConfigError

Address = tuple[str, int]


def parse_address(text: str) -> Address:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"bad address {text!r}: expected HOST:PORT")
    return host, int(port)


def format_address(address: Address) -> str:
    return f"{address[0]}:{address[1]}"


def free_local_ports(n: int) -> list[int]:
    """`n` distinct TCP ports on 127.0.0.1 that were free a moment ago (for local
    clusters: the demo, the benchmark, tests)."""
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@attrs.frozen(kw_only=True)
class ReplicaSettings:
    """Limits and periods of the replica runtime (`[replica]` in cluster.toml)."""

    #: Take a snapshot (and compact the log) after this many applied entries.
    snapshot_every_entries: int = 10_000
    #: Client requests (commands and reads) in progress on one replica before it
    #: answers BUSY: back-pressure instead of unbounded memory.
    pending_requests_max: int = 20_000
    #: Largest command payload accepted from a client (the entry adds 8 bytes).
    command_bytes_max: int = 4 << 20
    #: Compute and exchange the state digest every this many applied entries.
    digest_every_entries: int = 1_000
    #: Seconds to wait for in-flight work on shutdown.
    shutdown_timeout_s: float = 5.0
    #: The replica process's Linux CPU scheduling policy: "batch" (SCHED_BATCH:
    #: a woken process does not preempt a running one, so a leader that writes
    #: to a follower on a shared core keeps the core until it blocks, instead
    #: of stopping mid-batch) or "normal" (leave the policy as inherited).
    #: Ignored where the OS has no SCHED_BATCH.
    cpu_scheduling: str = "batch"

    def validate(self) -> ReplicaSettings:
        for name in ("snapshot_every_entries", "pending_requests_max", "command_bytes_max", "digest_every_entries"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ConfigError(f"replica.{name} must be a positive integer, got {value!r}")
        if not self.shutdown_timeout_s > 0:
            raise ConfigError("replica.shutdown_timeout_s must be positive")
        if self.cpu_scheduling not in CPU_SCHEDULING:
            raise ConfigError(f"replica.cpu_scheduling must be one of {CPU_SCHEDULING}, got {self.cpu_scheduling!r}")
        return self


#: Set by a supervisor (`rsm.cli.ReplicaProcesses`) in a replica's environment
#: to its own pid: the replica stops cleanly once that process is gone, even
#: if it was SIGKILLed.
PARENT_ENV = "RSM_EXIT_WITH_PARENT"

#: The values of `ReplicaSettings.cpu_scheduling`.
CPU_SCHEDULING = ("batch", "normal")


def apply_cpu_scheduling(policy: str) -> str:
    """Set this process's scheduling policy as `ReplicaSettings.cpu_scheduling`
    says; return the policy now in force ("batch", "normal", or "unsupported")."""
    if policy == "normal":
        return "normal"
    if not hasattr(os, "sched_setscheduler") or not hasattr(os, "SCHED_BATCH"):
        return "unsupported"
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except OSError:  # a seccomp filter or container may forbid it: run as is
        return "unsupported"
    return "batch"


@attrs.frozen(kw_only=True)
class ReplicaAddress:
    node_id: str
    peer: Address
    client: Address
    data: Path
    tls_cert: Path | None = None
    tls_key: Path | None = None


@attrs.frozen(kw_only=True)
class TlsConfig:
    """Mutual TLS: every replica and client presents a certificate from `ca`."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    def _pair(self, replica: ReplicaAddress | None) -> tuple[Path, Path]:
        cert = (replica.tls_cert if replica else None) or self.cert
        key = (replica.tls_key if replica else None) or self.key
        if cert is None or key is None:
            raise ConfigError("[tls] needs cert and key (or tls_cert and tls_key for each replica)")
        return cert, key

    def server_context(self, replica: ReplicaAddress) -> ssl.SSLContext:
        """For a replica's listeners: requires a client certificate from the CA."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_cert_chain(*map(str, self._pair(replica)))
        return ctx

    def client_context(self, replica: ReplicaAddress | None = None) -> ssl.SSLContext:
        """For dialing a replica: verifies its certificate, presents ours."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca))
        ctx.load_cert_chain(*map(str, self._pair(replica)))
        return ctx


@attrs.frozen(kw_only=True)
class ClusterConfig:
    path: Path
    cluster_id: str
    app: str
    secret: bytes = attrs.field(repr=False)
    tick_ms: int
    replicas: dict[str, ReplicaAddress]
    consensus: Config
    replica: ReplicaSettings
    tls: TlsConfig | None = None

    def replica_for(self, node_id: str) -> ReplicaAddress:
        try:
            return self.replicas[node_id]
        except KeyError:
            raise ConfigError(f"{node_id!r} is not a replica of {self.path} (replicas: {', '.join(self.replicas)})") from None

    def client_addresses(self) -> dict[str, Address]:
        return {node_id: r.client for node_id, r in self.replicas.items()}


def load_app(spec: str) -> type:
    """Import "package.module:Class" (the application's StateMachine class)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"app must look like 'package.module:Class', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r} for app {spec!r}: {exc}") from exc
    try:
        return getattr(module, attr)  # type: ignore[no-any-return]
    except AttributeError:
        raise ConfigError(f"{module_name!r} has no attribute {attr!r}") from None


def read_secret(path: Path) -> bytes:
    """Read the cluster secret; refuse a file others can read."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"secret file {path} does not exist (rsm init creates one)") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"secret file {path} is readable by others; chmod 600 {path}")
    secret = path.read_bytes().strip()
    if len(secret) < 16:
        raise ConfigError(f"secret file {path} holds fewer than 16 bytes")
    return secret


def write_secret(path: Path) -> None:
    """Create a new random secret, readable by the owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")


def _settings(cls: type, table: dict[str, Any], section: str) -> Any:
    known = {a.name for a in attrs.fields(cls)}
    unknown = set(table) - known
    if unknown:
        raise ConfigError(f"unknown setting(s) in [{section}]: {', '.join(sorted(unknown))}")
    try:
        return cls(**table).validate()
    except TypeError as exc:
        raise ConfigError(f"[{section}]: {exc}") from exc


def load_config(path: str | os.PathLike[str]) -> ClusterConfig:
    """Read and validate a cluster.toml; every error names the file and the field."""
    path = Path(path).resolve()
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    base = path.parent
    for key in ("cluster_id", "app", "secret_file"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ConfigError(f"{path}: '{key}' must be a non-empty string")
    tick_ms = raw.get("tick_ms", 20)
    if type(tick_ms) is not int or tick_ms < 1:
        raise ConfigError(f"{path}: tick_ms must be a positive integer")
    tables = raw.get("replicas")
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"{path}: at least one [replicas.ID] table is needed")
    replicas = {}
    for node_id, table in tables.items():
        try:
            replicas[node_id] = ReplicaAddress(
                node_id=node_id,
                peer=parse_address(table["peer"]),
                client=parse_address(table["client"]),
                data=(base / table["data"]).resolve(),
                tls_cert=(base / table["tls_cert"]).resolve() if "tls_cert" in table else None,
                tls_key=(base / table["tls_key"]).resolve() if "tls_key" in table else None,
            )
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"{path}: [replicas.{node_id}] needs peer, client and data ({exc})") from exc
    return ClusterConfig(
        path=path,
        cluster_id=raw["cluster_id"],
        app=raw["app"],
        secret=read_secret(base / raw["secret_file"]),
        tick_ms=tick_ms,
        replicas=replicas,
        consensus=_settings(Config, raw.get("consensus", {}), "consensus"),
        replica=_settings(ReplicaSettings, raw.get("replica", {}), "replica"),
        tls=_tls(raw.get("tls"), base, path),
    )


def _tls(table: object, base: Path, path: Path) -> TlsConfig | None:
    if table is None:
        return None
    if not isinstance(table, dict) or not isinstance(table.get("ca"), str):
        raise ConfigError(f"{path}: [tls] needs ca = \"PATH\"")
    unknown = set(table) - {"ca", "cert", "key"}
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) in [tls]: {', '.join(sorted(unknown))}")
    files = {k: (base / v).resolve() for k, v in table.items()}
    for name, file in files.items():
        if not file.exists():
            raise ConfigError(f"{path}: [tls] {name} file {file} does not exist")
    return TlsConfig(ca=files["ca"], cert=files.get("cert"), key=files.get("key"))


def render_config(
    *, cluster_id: str, app: str, secret_file: str, replicas: dict[str, tuple[str, str, str]], tick_ms: int = 20
) -> str:
    """The text of a new cluster.toml (used by `rsm init`)."""
    lines = [
        f'cluster_id = "{cluster_id}"',
        f'app = "{app}"',
        f'secret_file = "{secret_file}"',
        f"tick_ms = {tick_ms}",
        "",
    ]
    for node_id, (peer, client, data) in replicas.items():
        lines += [f"[replicas.{node_id}]", f'peer = "{peer}"', f'client = "{client}"', f'data = "{data}"', ""]
    return "\n".join(lines)
