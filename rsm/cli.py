"""The `rsm` command: create a cluster, run replicas, watch them.

- ``rsm init``: write a cluster.toml and its secret for N replicas on one host.
- ``rsm replica``: run one replica in the foreground (`rsm.replica.main`).
- ``rsm cluster up``: run every replica of a config as child processes of this
  one, show their state live, stop them all on Ctrl-C or SIGTERM.
- ``rsm status``: every replica's view: role, term, commit and applied index,
  lag, digests, divergence; ``--json`` for scripts.

See docs/cli.md. `init_cluster`, `ReplicaProcesses`, `status_report` and
`free_base_port` are the same things as functions, for scripts and tests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Final, NoReturn

import attrs
import click
from rich.console import Console, Group
from rich.live import Live
from rich.logging import RichHandler
from rich.table import Table
from rich.text import Text

from rsm.client import AsyncClient, ClientSettings, Unavailable
from rsm.config import (
    PARENT_ENV,
    Address,
    ClusterConfig,
    format_address,
    load_app,
    load_config,
    render_config,
    write_secret,
)
from rsm.errors import ConfigError, RsmError
from rsm.statemachine import StateMachine

__all__ = ["ReplicaProcesses", "cli", "free_base_port", "init_cluster", "main", "status_report"]

log = logging.getLogger("rsm.cli")

CONFIG_NAME: Final = "cluster.toml"
SECRET_NAME: Final = "cluster.secret"
#: How long `rsm cluster up` waits after SIGTERM before it SIGKILLs a replica.
STOP_TIMEOUT_S: Final = 10.0
#: How often `rsm cluster up` asks every replica for its status.
REFRESH_S: Final = 0.5
#: How long `rsm status` waits for each replica's answer.
STATUS_TIMEOUT_S: Final = 2.0
_APP_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

# ==========================================================================
# rsm init
# ==========================================================================


def init_cluster(directory: str | os.PathLike[str], *, replicas: int, base_port: int, app: str,
                 data: str = "data", host: str = "127.0.0.1", cluster_id: str | None = None,
                 tick_ms: int = 20) -> Path:
    """Write ``cluster.toml`` and ``cluster.secret`` (mode 0600) in `directory`
    for `replicas` replicas on `host`; return the config's path.

    Replica ``nI`` (I from 1) gets peer port ``base_port + 2(I-1)``, client port
    ``base_port + 2(I-1) + 1`` and data directory ``data/nI`` (relative paths
    are relative to `directory`). Refuses to overwrite either file
    (`ConfigError`), and checks that `app` imports as a StateMachine class.
    """
    if type(replicas) is not int or not 1 <= replicas <= 99:
        raise ConfigError(f"--replicas must be between 1 and 99, got {replicas}")
    if base_port < 1 or base_port + 2 * replicas - 1 > 65535:
        raise ConfigError(f"--base-port {base_port} leaves no room for {2 * replicas} ports below 65536")
    _check_app(app)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config_path, secret_path = directory / CONFIG_NAME, directory / SECRET_NAME
    for path in (config_path, secret_path):
        if path.exists():
            raise ConfigError(f"{path} already exists; refusing to overwrite it (remove it, or use another --dir)")
    members = {
        f"n{i + 1}": (f"{host}:{base_port + 2 * i}", f"{host}:{base_port + 2 * i + 1}",
                      os.path.normpath(os.path.join(data, f"n{i + 1}")))
        for i in range(replicas)
    }
    text = render_config(cluster_id=cluster_id or f"rsm-{secrets.token_hex(4)}", app=app,
                         secret_file=SECRET_NAME, replicas=members, tick_ms=tick_ms)
    write_secret(secret_path)  # before the config: whoever sees the config can read the secret
    _create_atomically(config_path, text)
    return config_path


def _create_atomically(path: Path, text: str) -> None:
    """Create `path` holding `text`, all at once: nobody reads it half-written
    (`rsm cluster up` creates a config that clients may be waiting for), and
    it is never overwritten (ConfigError if it appeared meanwhile)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    try:
        os.link(temporary, path)  # atomic; fails if `path` exists
    except FileExistsError:
        raise ConfigError(f"{path} already exists; refusing to overwrite it") from None
    finally:
        temporary.unlink()


def free_base_port(count: int, host: str = "127.0.0.1", attempts: int = 100) -> int:
    """A port P such that P .. P+count-1 are free on `host` right now (for
    demos and tests that must not collide with whatever else runs here)."""
    for _ in range(attempts):
        with socket.socket() as probe:
            probe.bind((host, 0))
            base = int(probe.getsockname()[1])
        if base + count - 1 > 65535:
            continue
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise ConfigError(f"found no {count} consecutive free ports on {host}")


def _check_app(app: str) -> None:
    if not _APP_SPEC.match(app):
        raise ConfigError(f"--app must look like 'package.module:Class', got {app!r}")
    cls = load_app(app)
    if not (isinstance(cls, type) and issubclass(cls, StateMachine)):
        raise ConfigError(f"--app {app}: {cls!r} is not a StateMachine subclass")


# ==========================================================================
# Replica processes (rsm cluster up)
# ==========================================================================


@attrs.define
class _Child:
    node_id: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    returncode: int | None = None  # set once its exit has been reported


class ReplicaProcesses:
    """The replicas of one config, run as child processes of this one.

    Each runs ``python -m rsm.cli replica --config ... --id ...`` in its own
    session (so a Ctrl-C in the terminal reaches only this process, which then
    stops them in order), with stdout and stderr appended to
    ``<log_dir>/<id>.log``. Nothing is restarted: `poll` reports exits.
    Use as a context manager, or call `stop`.
    """

    def __init__(self, config_path: str | os.PathLike[str], node_ids: Sequence[str], log_dir: str | os.PathLike[str],
                 *, python: str = sys.executable) -> None:
        self.config_path = Path(config_path).resolve()
        self.node_ids = list(node_ids)
        self.log_dir = Path(log_dir)
        self.python = python
        self.children: dict[str, _Child] = {}

    def start(self) -> None:
        """Start every replica that is not running."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for node_id in self.node_ids:
            child = self.children.get(node_id)
            if child is None or child.process.poll() is not None:
                if child is not None:
                    child.log_file.close()  # restarting a replica that exited (or was killed)
                self.children[node_id] = self._spawn(node_id)

    def _spawn(self, node_id: str) -> _Child:
        log_path = self.log_dir / f"{node_id}.log"
        log_file = log_path.open("ab")
        command = [self.python, "-m", "rsm.cli", "replica", "--config", str(self.config_path), "--id", node_id]
        # The replica stops by itself if this process dies without stopping it
        # (SIGKILL included): see PARENT_ENV.
        env = dict(os.environ, **{PARENT_ENV: str(os.getpid())})
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True, env=env)
        log.info("started replica %s (pid %d), log %s", node_id, process.pid, log_path)
        return _Child(node_id, process, log_path, log_file)

    def running(self) -> list[str]:
        return [c.node_id for c in self.children.values() if c.process.poll() is None]

    def poll(self) -> list[tuple[str, int]]:
        """Replicas that exited since the last call: [(node_id, exit status)]."""
        exited = []
        for child in self.children.values():
            code = child.process.poll()
            if code is not None and child.returncode is None:
                child.returncode = code
                exited.append((child.node_id, code))
        return exited

    def kill(self, node_id: str, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to one replica (tests and demos: crash it)."""
        self.children[node_id].process.send_signal(sig)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> dict[str, int]:
        """SIGTERM every running replica, SIGKILL those still running after
        `timeout_s`; return every replica's exit status."""
        for child in self.children.values():
            if child.process.poll() is None:
                child.process.terminate()
        deadline = time.monotonic() + timeout_s
        for child in self.children.values():
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("replica %s did not stop within %g s; killing it", child.node_id, timeout_s)
                child.process.kill()
                child.process.wait()
            child.log_file.close()
        return {c.node_id: c.process.returncode for c in self.children.values()}

    def __enter__(self) -> ReplicaProcesses:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# ==========================================================================
# Status reports (rsm status, rsm cluster up)
# ==========================================================================


def status_report(cluster_id: str, addresses: Mapping[str, Address],
                  statuses: Mapping[str, Mapping[str, Any] | BaseException]) -> dict[str, Any]:
    """One JSON-able summary of the replicas' status maps (or the errors that
    replaced them): the leader, its term, each replica's lag behind the
    leader's commit index, and every divergence found.

    A divergence is a replica's own report, or two replicas whose state
    digests differ at the same applied index.
    """
    reachable = {n: s for n, s in statuses.items() if not isinstance(s, BaseException)}
    leader, term = _leader_and_term(reachable)
    leader_commit = reachable[leader].get("commit") if leader in reachable else None
    replicas: dict[str, Any] = {}
    for node_id, status in statuses.items():
        address = format_address(addresses[node_id]) if node_id in addresses else None
        if isinstance(status, BaseException):
            problem = status.problems.get(node_id) if isinstance(status, Unavailable) else None
            replicas[node_id] = {"reachable": False, "address": address, "error": problem or str(status)}
            continue
        applied = status.get("applied")
        lag = leader_commit - applied if isinstance(leader_commit, int) and isinstance(applied, int) else None
        replicas[node_id] = {"reachable": True, "address": address, **status, "lag": lag}
    divergence = _divergence(reachable)
    return {
        "cluster_id": cluster_id,
        "leader": leader,
        "term": term,
        "commit": leader_commit,
        "healthy": leader is not None and len(reachable) == len(statuses) and not divergence,
        "divergence": divergence,
        "replicas": replicas,
    }


def _leader_and_term(reachable: Mapping[str, Mapping[str, Any]]) -> tuple[str | None, int | None]:
    terms = [s["term"] for s in reachable.values() if isinstance(s.get("term"), int)]
    if not terms:
        return None, None
    term = max(terms)
    claims = [n for n, s in reachable.items() if s.get("role") == "leader" and s.get("term") == term]
    if claims:
        return claims[0], term
    votes = Counter(s.get("leader") for s in reachable.values() if s.get("term") == term and s.get("leader"))
    return (votes.most_common(1)[0][0] if votes else None), term


def _divergence(reachable: Mapping[str, Mapping[str, Any]]) -> list[str]:
    found = [f"{n}: {s['divergence']}" for n, s in reachable.items() if s.get("divergence")]
    by_index: dict[int, dict[str, str]] = {}
    for node_id, status in reachable.items():
        digest = status.get("digest")
        if isinstance(digest, list) and len(digest) == 2 and isinstance(digest[0], int):
            by_index.setdefault(digest[0], {})[node_id] = str(digest[1])
    for index, digests in sorted(by_index.items()):
        if len(set(digests.values())) > 1:
            pairs = ", ".join(f"{n}={d[:16]}" for n, d in sorted(digests.items()))
            found.append(f"state digests differ at applied index {index}: {pairs}")
    return found


def render_report(report: Mapping[str, Any], processes: ReplicaProcesses | None = None) -> Group:
    """The report as a rich table with a one-line header and any divergence.
    With `processes`, a column shows each replica's process (pid, or EXITED)."""
    header = Text.assemble(
        ("cluster ", "bold"), (report["cluster_id"], "bold cyan"),
        f"  leader {_cell(report['leader'])}  term {_cell(report['term'])}  commit {_cell(report['commit'])}  "
        f"voters {' '.join(_first_members(report, 'voters')) or '-'}  "
        f"learners {' '.join(_first_members(report, 'learners')) or '-'}",
    )
    table = Table(box=None, header_style="bold")
    table.add_column("replica", no_wrap=True)
    table.add_column("address", no_wrap=True)
    if processes is not None:
        table.add_column("process", no_wrap=True)
    table.add_column("role", no_wrap=True)
    for column in ("term", "commit", "applied", "lag", "last"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("digest", no_wrap=True)
    for node_id, row in report["replicas"].items():
        process = [_process_cell(processes, node_id)] if processes is not None else []
        table.add_row(node_id, _cell(row["address"]), *process, *_status_cells(row))
    parts: list[Any] = [header, table]
    parts += [Text(f"{node_id} unreachable: {row['error']}", style="yellow")
              for node_id, row in report["replicas"].items() if not row["reachable"]]
    parts += [Text(f"DIVERGENCE: {d}", style="bold red") for d in report["divergence"]]
    return Group(*parts)


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def _first_members(report: Mapping[str, Any], key: str) -> list[str]:
    for row in report["replicas"].values():
        if row.get("reachable") and isinstance(row.get(key), list):
            return [str(m) for m in row[key]]
    return []


def _status_cells(row: Mapping[str, Any]) -> list[Text | str]:
    if not row["reachable"]:
        return [Text("unreachable", style="yellow"), "", "", "", "", "", ""]
    role = str(row.get("role"))
    role_style = "bold green" if role == "leader" else "yellow" if "candidate" in role else ""
    digest = row.get("digest")
    digest_text = f"{digest[0]}:{str(digest[1])[:8]}" if isinstance(digest, list) and len(digest) == 2 else "-"
    lag = row.get("lag")
    return [Text(role, style=role_style), _cell(row.get("term")), _cell(row.get("commit")),
            _cell(row.get("applied")), Text(_cell(lag), style="yellow" if lag else ""),
            _cell(row.get("last_index")), digest_text]


def _process_cell(processes: ReplicaProcesses, node_id: str) -> Text:
    child = processes.children.get(node_id)
    if child is None:
        return Text("not started", style="dim")
    code = child.process.poll()
    if code is None:
        return Text(f"pid {child.process.pid}", style="green")
    return Text(f"EXITED ({code})", style="bold white on red")


async def _gather_report(config_path: Path, timeout_s: float) -> dict[str, Any]:
    settings = ClientSettings(attempt_timeout_s=timeout_s, client_id="rsm-status")
    async with AsyncClient.from_config(config_path, settings=settings) as client:
        return status_report(client.cluster_id, client.replicas, await client.status_all())


# ==========================================================================
# The commands
# ==========================================================================


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """rsm: run and inspect replicated state machine clusters."""
    ctx.obj = verbose


_stdout = Console()
_stderr = Console(stderr=True)


def _setup_logging() -> None:
    """Log to stderr through rich, at the level -v chose. (Not for `rsm replica`,
    which configures its own logging.)"""
    verbose = click.get_current_context().find_root().obj or 0
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(console=_stderr, show_path=False)])


def _fail(message: str, code: int = 1) -> NoReturn:
    _stderr.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    sys.exit(code)


def _init_options(func: Any) -> Any:
    """The options of `rsm init`, shared with `rsm cluster up`."""
    options = [
        click.option("--app", help="The StateMachine class, as package.module:Class."),
        click.option("--replicas", type=click.IntRange(1, 99), default=3, show_default=True,
                     help="How many replicas."),
        click.option("--base-port", type=click.IntRange(1, 65535), default=7100, show_default=True,
                     help="Replica nI listens on base+2(I-1) (peers) and base+2(I-1)+1 (clients)."),
        click.option("--data", default="data", show_default=True,
                     help="Data directories go in DATA/nI (relative to --dir)."),
        click.option("--host", default="127.0.0.1", show_default=True, help="The address every replica uses."),
        click.option("--cluster-id", default=None, help="Default: rsm-<random hex>."),
        click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
                     show_default=True, help="Where cluster.toml and cluster.secret go."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@cli.command()
@_init_options
def init(app: str | None, replicas: int, base_port: int, data: str, host: str, cluster_id: str | None,
         directory: Path) -> None:
    """Write cluster.toml and a new secret (mode 0600) for a cluster on one host.

    Example: rsm init --replicas 3 --base-port 7100 --app examples.kvstore.machine:KVStore
    """
    _setup_logging()
    if app is None:
        _fail("--app is required (for example --app examples.counter.machine:Counter)", 2)
    try:
        path = init_cluster(directory, replicas=replicas, base_port=base_port, app=app, data=data, host=host,
                            cluster_id=cluster_id)
    except RsmError as exc:
        _fail(str(exc))
    _stdout.print(f"wrote {path} and {path.parent / SECRET_NAME} ({replicas} replicas, ports "
                  f"{base_port}-{base_port + 2 * replicas - 1})")
    _stdout.print(f"start them with: rsm cluster up --config {path}")


@cli.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=CONFIG_NAME,
              show_default=True, help="The cluster.toml.")
@click.option("--id", "node_id", required=True, help="Which replica of the config this is.")
def replica(config_path: Path, node_id: str) -> None:
    """Run one replica in the foreground until SIGTERM or Ctrl-C."""
    from rsm.replica import main as run_replica  # the heavy imports only for this command

    sys.exit(run_replica(str(config_path), node_id))


@cli.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=CONFIG_NAME,
              show_default=True, help="The cluster.toml.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--timeout-s", type=click.FloatRange(min=0.01), default=STATUS_TIMEOUT_S, show_default=True,
              help="How long to wait for each replica.")
def status(config_path: Path, as_json: bool, timeout_s: float) -> None:
    """Every replica's role, term, commit and applied index, lag, digest.

    Exit status 0 if every replica answered, a leader is known and nothing
    diverged; 1 otherwise.
    """
    _setup_logging()
    try:
        report = asyncio.run(_gather_report(config_path, timeout_s))
    except RsmError as exc:
        _fail(str(exc), 2)
    if as_json:
        click.echo(json.dumps(report, sort_keys=True))
    else:
        _stdout.print(render_report(report))
    sys.exit(0 if report["healthy"] else 1)


@cli.group()
def cluster() -> None:
    """Run a whole cluster on this machine."""


@cluster.command("up")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The cluster.toml [default: DIR/cluster.toml]; created first if missing and --app is given.")
@_init_options
@click.option("--log-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Replica logs go to LOG_DIR/<id>.log [default: logs/ next to the config].")
@click.option("--refresh-s", type=click.FloatRange(min=0.05), default=REFRESH_S, show_default=True,
              help="How often to ask the replicas for their status.")
@click.option("--stop-timeout-s", type=click.FloatRange(min=0.1), default=STOP_TIMEOUT_S, show_default=True,
              help="After Ctrl-C: how long to wait after SIGTERM before SIGKILL.")
def cluster_up(config_path: Path | None, app: str | None, replicas: int, base_port: int, data: str, host: str,
               cluster_id: str | None, directory: Path, log_dir: Path | None, refresh_s: float,
               stop_timeout_s: float) -> None:
    """Start every replica of a config here, watch them, stop them on Ctrl-C.

    A replica that exits is reported (in the table and the log) and not restarted.
    """
    _setup_logging()
    config_path = config_path or directory / CONFIG_NAME
    try:
        if not config_path.exists():
            if app is None:
                _fail(f"{config_path} does not exist; create it with rsm init, or give --app to create it here", 2)
            init_cluster(config_path.parent, replicas=replicas, base_port=base_port, app=app, data=data,
                         host=host, cluster_id=cluster_id)
            _stdout.print(f"wrote {config_path}")
        config = load_config(config_path)
    except RsmError as exc:
        _fail(str(exc), 2)
    processes = ReplicaProcesses(config.path, list(config.replicas), log_dir or config.path.parent / "logs")
    processes.start()
    try:
        asyncio.run(_watch(config, processes, refresh_s))
    finally:
        codes = processes.stop(stop_timeout_s)
    _stdout.print("stopped: " + ", ".join(f"{n} exit {c}" for n, c in codes.items()))
    sys.exit(0 if not any(codes.values()) else 1)


async def _watch(config: ClusterConfig, processes: ReplicaProcesses, refresh_s: float) -> None:
    """Refresh the live table until Ctrl-C/SIGTERM or until every replica exited."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    settings = ClientSettings(attempt_timeout_s=max(refresh_s, 0.2), client_id="rsm-cluster-up")
    leader: str | None = None
    async with AsyncClient.from_config(config.path, settings=settings) as client:
        with Live(console=_stdout, refresh_per_second=4, auto_refresh=_stdout.is_terminal) as live:
            while not stop.is_set():
                _report_exits(processes)
                report = status_report(config.cluster_id, config.client_addresses(), await client.status_all())
                live.update(render_report(report, processes), refresh=True)
                if report["leader"] != leader and report["leader"] is not None:
                    leader = report["leader"]
                    _stdout.print(f"leader: {leader} (term {report['term']})")
                if not processes.running():
                    _report_exits(processes)
                    _stderr.print("[bold red]every replica has exited[/]")
                    break
                try:
                    async with asyncio.timeout(refresh_s):
                        await stop.wait()
                except TimeoutError:
                    pass
    if not _stdout.is_terminal:
        _stdout.print()  # the final table ends without a newline off a terminal
    _stdout.print("stopping the replicas ...")


def _report_exits(processes: ReplicaProcesses) -> None:
    for node_id, code in processes.poll():
        child = processes.children[node_id]
        message = (f"REPLICA {node_id} EXITED with status {code}; it is NOT restarted. "
                   f"Its log: {child.log_path}")
        log.error(message)
        _stderr.print(f"[bold white on red]{message}[/]", highlight=False, soft_wrap=True)
        for line in _tail(child.log_path, 5):
            _stderr.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)


def _tail(path: Path, lines: int) -> Iterator[str]:
    try:
        text = path.read_bytes()[-4096:].decode(errors="replace")
    except OSError:
        return iter(())
    return iter(text.splitlines()[-lines:])


@cli.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Benchmark this cluster (its app must be rsm.bench:BenchCounter); default: start a local one.")
@click.option("--processes", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Client processes driving the load.")
@click.option("--in-flight", type=click.IntRange(1, 512), default=128, show_default=True,
              help="Commands outstanding per client process.")
@click.option("--value-bytes", type=click.IntRange(0, 1 << 20), default=10, show_default=True,
              help="Size of each command's argument.")
@click.option("--duration", "duration_s", type=click.FloatRange(min=0.5), default=10.0, show_default=True,
              help="Seconds measured (after a warm-up).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench(config_path: Path | None, processes: int, in_flight: int, value_bytes: int, duration_s: float,
          as_json: bool) -> None:
    """Measure throughput and latency from separate client processes."""
    from rsm import bench as bench_mod

    options = bench_mod.BenchOptions(processes=processes, in_flight=in_flight, value_bytes=value_bytes,
                                     duration_s=duration_s)
    if as_json:
        result = bench_mod.run(options, config_path)
        click.echo(json.dumps(result))
        return
    from rich.live import Live

    started = time.monotonic()
    with Live(console=_stdout, transient=True) as live:
        def progress(done: int) -> None:
            elapsed = max(1e-9, time.monotonic() - started)
            live.update(f"{done:,} commands acknowledged ({done / elapsed:,.0f}/s so far)")

        result = bench_mod.run(options, config_path, on_progress=progress)
    bench_mod.print_report(result)


def main() -> None:
    """Entry point of the `rsm` console script."""
    cli(prog_name="rsm")


if __name__ == "__main__":
    main()
