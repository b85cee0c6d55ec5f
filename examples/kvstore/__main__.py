"""Command-line client of the replicated key-value store.

    python -m examples.kvstore --config cluster.toml put KEY VALUE [--ttl-ms N]
    python -m examples.kvstore --config cluster.toml get KEY [--stale]
    python -m examples.kvstore --config cluster.toml delete KEY
    python -m examples.kvstore --config cluster.toml cas KEY OLD NEW
    python -m examples.kvstore --config cluster.toml scan PREFIX [--limit N]

Values are strings, or any JSON value with ``--json`` (then ``null`` as OLD
in ``cas`` means "the key must be absent"). String values print as they are,
others as JSON. Exit status: 0 done; 1 the key was absent or the cas did not
match; 2 bad usage; 3 the cluster or the command failed.
"""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click

from examples.kvstore.machine import SCAN_LIMIT_MAX, KVStore
from rsm.client import Client, MachineProxy
from rsm.errors import RsmError

#: Exit statuses.
EXIT_NOT_FOUND = 1
EXIT_ERROR = 3


def prefix_end(prefix: str) -> str | None:
    """The smallest string above every string that starts with `prefix` (None
    if there is none), so that ``[prefix, prefix_end(prefix))`` is the prefix's
    key range in code point order, which is the store's UTF-8 byte order."""
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if code == 0xD800:  # surrogates cannot be stored: skip them
            code = 0xE000
        if code <= 0x10FFFF:
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None


def _parse(text: str, as_json: bool) -> Any:
    if not as_json:
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{text!r} is not JSON: {exc}") from None


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, sort_keys=True)
    except TypeError:  # bytes, registered attrs values
        return repr(value)


def _fail(message: str, code: int) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(code)


def _store(ctx: click.Context, consistency: str = "linearizable") -> MachineProxy:
    client: Client = ctx.obj
    return client.proxy(KVStore, consistency=consistency)


class _Group(click.Group):
    """Turns rsm errors (unavailable cluster, a command's error, a bad call)
    into a message and exit status 3 instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RsmError as exc:
            _fail(f"error: {exc}", EXIT_ERROR)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", default="cluster.toml", show_default=True,
              type=click.Path(dir_okay=False), help="The cluster's cluster.toml.")
@click.pass_context
def kv(ctx: click.Context, config_path: str) -> None:
    """Put, get, delete, compare-and-set and scan keys of an rsm KVStore cluster."""
    ctx.obj = ctx.with_resource(Client.from_config(config_path))


@kv.command()
@click.argument("key")
@click.argument("value")
@click.option("--ttl-ms", type=click.IntRange(min=1), default=None, help="Expire the key after this long.")
@click.option("--json", "as_json", is_flag=True, help="VALUE is JSON.")
@click.pass_context
def put(ctx: click.Context, key: str, value: str, ttl_ms: int | None, as_json: bool) -> None:
    """Store VALUE under KEY."""
    _store(ctx).put(key, _parse(value, as_json), ttl_ms)
    click.echo("ok")


@kv.command()
@click.argument("key")
@click.option("--stale", is_flag=True, help="Read the nearest replica's state at once, maybe not the newest.")
@click.pass_context
def get(ctx: click.Context, key: str, stale: bool) -> None:
    """Print the value of KEY (exit status 1 if absent)."""
    value = _store(ctx, "stale" if stale else "linearizable").get(key)
    if value is None:
        _fail(f"{key}: not found", EXIT_NOT_FOUND)
    click.echo(_show(value))


@kv.command()
@click.argument("key")
@click.pass_context
def delete(ctx: click.Context, key: str) -> None:
    """Remove KEY (exit status 1 if it was absent)."""
    if not _store(ctx).delete(key):
        _fail(f"{key}: not found", EXIT_NOT_FOUND)
    click.echo("deleted")


@kv.command()
@click.argument("key")
@click.argument("old")
@click.argument("new")
@click.option("--ttl-ms", type=click.IntRange(min=1), default=None, help="Expire the key after this long.")
@click.option("--json", "as_json", is_flag=True, help="OLD and NEW are JSON; OLD null: KEY must be absent.")
@click.pass_context
def cas(ctx: click.Context, key: str, old: str, new: str, ttl_ms: int | None, as_json: bool) -> None:
    """Set KEY to NEW if its value is OLD (exit status 1 if it is not)."""
    if not _store(ctx).cas(key, _parse(old, as_json), _parse(new, as_json), ttl_ms):
        _fail(f"{key}: the value is not {old} (nothing changed)", EXIT_NOT_FOUND)
    click.echo("ok")


@kv.command()
@click.argument("prefix", default="")
@click.option("--limit", type=click.IntRange(1, SCAN_LIMIT_MAX), default=100, show_default=True,
              help="Most keys to print.")
@click.option("--stale", is_flag=True, help="Read the nearest replica's state at once, maybe not the newest.")
@click.pass_context
def scan(ctx: click.Context, prefix: str, limit: int, stale: bool) -> None:
    """Print the keys starting with PREFIX and their values, in key order, tab-separated."""
    pairs = _store(ctx, "stale" if stale else "linearizable").scan(prefix, prefix_end(prefix), limit)
    for key, value in pairs:
        click.echo(f"{key}\t{_show(value)}")


def main() -> None:
    kv(prog_name="python -m examples.kvstore")


if __name__ == "__main__":
    main()
