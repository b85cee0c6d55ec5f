"""Linearizability checker for histories of a replicated key-value register store.

The simulator records every client operation (a `put` or a `get` on one key)
with the tick it was called and the tick its response arrived, or no response
at all when the client timed out or crashed. `check` decides whether some
total order of the operations (a *linearization*) exists that (a) respects
real time -- if `a` returned before `b` was called, `a` comes first -- and
(b) is a legal sequential run of a map whose every key starts at `None`.

Theory of operation
-------------------
1. Locality / P-compositionality. A map of independent registers is
   linearizable iff each key's sub-history is (Herlihy & Wing 1990, "locality";
   Horn & Kroening 2015, "P-compositionality"). We check keys separately,
   smallest first, so the first violation found names the smallest failing key.

2. Unknown outcomes. An operation without a response may have taken effect at
   any time after its call, or never. A `get` without a response constrains
   nothing and is dropped. A `put(v)` without a response is, in the classic
   treatment (Knossos, Porcupine), given a return time of infinity. We bound it
   instead: if it is observed at all, some `get` that returned `v` is
   linearized after it, so it took effect no later than T, the last return of a
   `get` that read `v`; if it is never observed, deleting it from any
   linearization leaves a linearization. So it either takes effect in
   [call, T] or is *skipped* (treated as never applied); when no `get` read
   `v` by T >= call, it is dropped outright. Finite intervals keep the cache
   keys small and stop one timed-out write from doubling the search space for
   the rest of the history.

3. Search (Wing & Gong 1993, with Lowe 2017's just-in-time linearization, as
   in Porcupine). Calls and returns are laid out in one doubly-linked list in
   time order. Scanning from the head, the search may linearize any operation
   whose call it meets (if the register model allows it) and must backtrack
   when it meets a return whose operation is not yet linearized, since that
   operation had to take effect before returning. Linearizing an operation
   unlinks its call and return (Knuth's dancing links, so backtracking
   relinks them in O(1)). A cache of (set of linearized operations, register
   value) pairs already explored prunes the search: the future depends only on
   that pair. The set is a bitset over operations in call order, stored as
   (lowest unlinearized index, bits above it), which is small because only
   operations concurrent with the oldest pending one can be set above it.

4. Register-specific pruning. A value is *orphaned* when some remaining `get`
   returned it (and may not be skipped, see point 6) but no remaining `put`
   writes it: those gets can only read it if the register holds it now and
   keeps it until they are linearized. So a node where an orphaned value
   other than the current one exists is dead. With distinct written values
   this stops the search from overwriting a value that is still to be read,
   which is where it would otherwise spend its time. And a pending `get`
   (called, and no remaining operation had to precede it) that reads the
   current value is linearized at once, with no alternative tried: in any
   completion of the node, moving it to the front changes no value read and
   breaks no real-time order. This partial-order reduction leaves the search
   branching only on the order of writes.

5. A bound. The search is exponential in the worst case, so it stops after
   `CheckSettings.search_steps_max` steps per key and reports INCONCLUSIVE,
   distinct from VIOLATION, so the simulator never reports a false violation.

6. Windows. A violation deep in a long history forces the search to exhaust
   every linearization of the prefix before it, which may exceed the bound.
   But if the history is linearizable, so is every time window [t0, t1] of it
   in a weaker sense: take the operations called by t1 that had not returned
   before t0, treat responses after t1 as unknown, let the register start at
   any value, and let operations called before t0 be skipped (they may have
   taken effect before the window). Restricting a linearization of the whole
   history to such a window gives one of the window, so a window without a
   linearization is a proof of violation. When the search has not ended
   after `windows_after_steps` (and again at its bound), and to explain a
   violation briefly, we search windows ending where the search got stuck,
   doubling their size from a few operations; and, when a
   value read later was orphaned there, the window from just after the last
   write of that value to the last read of it, where a stale read shows up
   as a read of a value no write in the window provides.

Using it: record with `History`, call `check`, and report only
`result.violation` as a bug; INCONCLUSIVE means "too hard within the limits".
Write distinct values (e.g. client id and sequence number): the pruning of
point 4 and the windows of point 6 rely on a read naming the write it saw.
With few distinct values, long operations and many unknown-outcome writes, a
history of thousands of operations on one key can exceed the bound.

Time: operation `a` precedes `b` iff `a.ret < b.call`. A return and a call on
the same tick are concurrent: the checker cannot see the order of events
within a tick, and treating them as concurrent can hide a violation but never
invent one.

References: M. Herlihy, J. Wing, "Linearizability: a correctness condition for
concurrent objects", TOPLAS 1990. J. Wing, C. Gong, "Testing and verifying
concurrent objects", JPDC 1993. A. Horn, D. Kroening, "Faster linearizability
checking via P-compositionality", FORTE 2015. G. Lowe, "Testing for
linearizability", CCPE 2017. A. Athalye, Porcupine (github.com/anishathalye/porcupine).
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Hashable, Iterable, Iterator, Sequence
from typing import Literal, TypeAlias

import attrs

from rsm.errors import ConfigError, invariant

__all__ = [
    "CheckResult",
    "CheckSettings",
    "ClientId",
    "History",
    "Key",
    "Kind",
    "Operation",
    "Outcome",
    "Value",
    "check",
]

#: A key of the store: anything hashable (keys are never ordered or compared).
Key: TypeAlias = Hashable
#: A register value; every key starts at None. Compared with ==.
Value: TypeAlias = int | bytes | None
#: Who called an operation; only used to name it in explanations.
ClientId: TypeAlias = Hashable
Kind: TypeAlias = Literal["put", "get"]


@attrs.frozen(kw_only=True)
class CheckSettings:
    """Limits of the checker. Every limit is named here, with its reason."""

    #: Most search steps (list entries visited) spent on one key before giving up
    #: with INCONCLUSIVE. A linearizable history with ~10 concurrent clients and
    #: distinct values takes a few steps per operation; this allows a hard key a
    #: few seconds, and bounds the cache (at most one entry of ~150 bytes per
    #: step; in practice about one per seven steps).
    search_steps_max: int = 2_000_000
    #: Steps of a key's whole-history search after which, if it has not ended,
    #: windows are tried before it goes on (point 6): a deep violation is often
    #: proved by a small window long before the search would exhaust.
    windows_after_steps: int = 50_000
    #: Most search steps spent on one window (theory, point 6). Windows are
    #: short, so this is well below `search_steps_max`. A key that is not
    #: proved OK gets at most 2 rounds of up to 4 window end ticks, each with
    #: up to log2(window_operations_max / 4) + 1 window sizes; in practice a
    #: few thousand steps in all, since small windows finish fast.
    window_steps_max: int = 20_000
    #: Most operations (called inside the window) in the largest window tried.
    window_operations_max: int = 512
    #: Most operations listed per section of an explanation, so a failure on a
    #: key with thousands of operations prints the part near the failure.
    explanation_operations_max: int = 40

    def validate(self) -> CheckSettings:
        """Raise `ConfigError` on a bad value."""
        names = (
            "search_steps_max",
            "windows_after_steps",
            "window_steps_max",
            "window_operations_max",
            "explanation_operations_max",
        )
        for name in names:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        return self


@attrs.frozen(kw_only=True)
class Operation:
    """One client operation on one key, from its call to its response, if any.

    `value` is the input of a `put`; `output` is what a `get` returned (always
    `None` for a `put`, which acknowledges with nothing). `ret` is `None` while
    the outcome is unknown: no response yet, or the client timed out or crashed.
    """

    op_id: int
    client: ClientId
    kind: Kind = attrs.field(validator=attrs.validators.in_(("put", "get")))
    key: Key
    value: Value = None
    output: Value = None
    call: int
    ret: int | None = None

    def __attrs_post_init__(self) -> None:
        invariant(self.ret is None or self.ret >= self.call, f"returns before its call: {self}")
        invariant(self.kind == "put" or self.value is None, f"a get has no input: {self}")
        invariant(self.kind == "get" or self.output is None, f"a put returns None: {self}")

    @property
    def outcome_known(self) -> bool:
        """Whether the client saw the response (so the operation took effect)."""
        return self.ret is not None

    def describe(self) -> str:
        """One line naming the operation, e.g. `#7 client 2 get('x') -> 3 [10, 12]`."""
        if self.kind == "put":
            text = f"put({self.key!r}, {self.value!r})"
        else:
            text = f"get({self.key!r})" + (f" -> {self.output!r}" if self.outcome_known else "")
        ret = "?] (outcome unknown)" if self.ret is None else f"{self.ret}]"
        return f"#{self.op_id} client {self.client!r} {text} [{self.call}, {ret}"


@attrs.define
class History:
    """The record of client operations the simulator hands to `check`.

    Operation ids are indices into `operations`. Times are simulated ticks and
    must not go backwards across calls (one clock drives the simulation). An
    operation never completed is treated like one that `fail_unknown` marked.
    """

    operations: list[Operation] = attrs.Factory(list)
    _open: set[int] = attrs.field(factory=set, init=False, repr=False)
    _now: int | None = attrs.field(default=None, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        for index, op in enumerate(self.operations):
            invariant(op.op_id == index, f"operation id {op.op_id} is not its index {index}")

    def invoke_put(self, client: ClientId, key: Key, value: Value, now: int) -> int:
        """Record that `client` called `put(key, value)` at tick `now`; return its id."""
        return self._invoke(client, "put", key, value, now)

    def invoke_get(self, client: ClientId, key: Key, now: int) -> int:
        """Record that `client` called `get(key)` at tick `now`; return its id."""
        return self._invoke(client, "get", key, None, now)

    def complete(self, op_id: int, now: int, output: Value = None) -> None:
        """Record the response to `op_id` at tick `now` (`output` is what a get read)."""
        self._advance(now)
        op = self._close(op_id)
        self.operations[op_id] = attrs.evolve(op, ret=now, output=output)

    def fail_unknown(self, op_id: int) -> None:
        """Record that `op_id` will never get a response: it may or may not have applied."""
        self._close(op_id)

    def _invoke(self, client: ClientId, kind: Kind, key: Key, value: Value, now: int) -> int:
        self._advance(now)
        op_id = len(self.operations)
        op = Operation(op_id=op_id, client=client, kind=kind, key=key, value=value, call=now)
        self.operations.append(op)
        self._open.add(op_id)
        return op_id

    def _close(self, op_id: int) -> Operation:
        invariant(op_id in self._open, f"operation {op_id} is not awaiting a response")
        self._open.remove(op_id)
        return self.operations[op_id]

    def _advance(self, now: int) -> None:
        invariant(self._now is None or now >= self._now, f"time went back: {now} < {self._now}")
        self._now = now


class Outcome(enum.Enum):
    """The verdict: only VIOLATION is proof that the history is not linearizable."""

    OK = "ok"
    VIOLATION = "violation"
    INCONCLUSIVE = "inconclusive"  # the search hit its bound: neither was proved


@attrs.frozen(kw_only=True)
class CheckResult:
    """What `check` found. `key` and `explanation` are set unless the outcome is OK."""

    outcome: Outcome
    key: Key | None = None
    explanation: str = ""
    #: Search steps spent over all keys checked (a deterministic cost measure).
    steps: int = 0

    @property
    def ok(self) -> bool:
        """Whether the history is proved linearizable."""
        return self.outcome is Outcome.OK

    @property
    def violation(self) -> bool:
        """Whether the history is proved NOT linearizable (report this as a bug)."""
        return self.outcome is Outcome.VIOLATION


def check(
    history: History | Iterable[Operation], settings: CheckSettings | None = None
) -> CheckResult:
    """Decide whether `history` is linearizable for a map of registers.

    Keys are checked one by one, fewest operations first; the first violation
    is returned (so it is on the smallest failing key). Without a violation,
    an inconclusive key makes the whole result INCONCLUSIVE: report that as
    "too hard to check" (raise the limits or shorten the run), never as a bug.
    The result, explanation and step count are a function of the input only.
    """
    settings = (settings or CheckSettings()).validate()
    operations = history.operations if isinstance(history, History) else list(history)
    by_key = _partition_by_key(operations)
    first_inconclusive: CheckResult | None = None
    steps = 0
    for key, key_ops in sorted(by_key.items(), key=lambda item: len(item[1])):
        result = _check_key(key, key_ops, settings)
        steps += result.steps
        if result.outcome is Outcome.VIOLATION:
            return attrs.evolve(result, steps=steps)
        if result.outcome is Outcome.INCONCLUSIVE and first_inconclusive is None:
            first_inconclusive = result
    if first_inconclusive is not None:
        return attrs.evolve(first_inconclusive, steps=steps)
    return CheckResult(outcome=Outcome.OK, steps=steps)


def _partition_by_key(operations: Iterable[Operation]) -> dict[Key, list[Operation]]:
    """Group operations by key, keys in order of first appearance (deterministic)."""
    by_key: dict[Key, list[Operation]] = {}
    for op in operations:
        by_key.setdefault(op.key, []).append(op)
    return by_key


def _check_key(key: Key, ops: Sequence[Operation], settings: CheckSettings) -> CheckResult:
    """Check one key: the whole history, with windows to prove or explain a failure.

    The whole-history search runs in two stages: if it has neither finished nor
    failed after `windows_after_steps`, windows are tried (a deep violation is
    often proved by a small window far sooner than by exhausting the search),
    then it resumes up to `search_steps_max`.
    """
    whole = _Window()
    search = _Search(_prepare(ops, whole), any_start=False, record=False)
    tried: set[_Window] = set()
    window, window_steps = None, 0
    for steps_max in (settings.windows_after_steps, settings.search_steps_max):
        found = search.run(min(steps_max, settings.search_steps_max))
        if found.outcome is Outcome.OK:
            return CheckResult(outcome=Outcome.OK, steps=found.steps + window_steps)
        window, spent = _find_failing_window(ops, found.focus, tried, settings)
        window_steps += spent
        if window is not None or found.outcome is Outcome.VIOLATION:
            break
    steps = found.steps + window_steps
    if window is None and found.outcome is Outcome.INCONCLUSIVE:
        text = _explain_inconclusive(key, ops, settings)
        return CheckResult(outcome=Outcome.INCONCLUSIVE, key=key, explanation=text, steps=steps)
    # Trace only now, in a second identical search: the common case (OK) stays fast.
    window = window or whole
    steps_max = settings.search_steps_max if window == whole else settings.window_steps_max
    candidates, traced = _search(ops, window, steps_max, record=True)
    invariant(traced.outcome is Outcome.VIOLATION, "the search is deterministic")
    text = _explain_violation(key, ops, window, candidates, traced, settings)
    return CheckResult(outcome=Outcome.VIOLATION, key=key, explanation=text, steps=steps)


#: The first window tried has this many operations called inside it.
_WINDOW_OPERATIONS_MIN = 4


def _find_failing_window(
    ops: Sequence[Operation],
    focus: Iterable[tuple[int, int | None]],
    tried: set[_Window],
    settings: CheckSettings,
) -> tuple[_Window | None, int]:
    """Search the windows `focus` suggests, skipping (and adding to) `tried`.

    For each (end, start) pair: the window [start, end] if start is given,
    then windows ending at `end` doubling in size from a few operations.
    Returns the first window found with no linearization (or None) and the
    steps spent.
    """
    steps = 0
    for end, start in focus:
        for window in _windows_ending(ops, end, start, settings):
            if window in tried:
                continue
            tried.add(window)
            _, found = _search(ops, window, settings.window_steps_max)
            steps += found.steps
            if found.outcome is Outcome.VIOLATION:
                return window, steps
    return None, steps


def _windows_ending(
    ops: Sequence[Operation], end: int, start: int | None, settings: CheckSettings
) -> Iterator[_Window]:
    """Windows ending at tick `end`: from `start` if given, then doubling in size."""
    if start is not None and start <= end:
        yield _Window(start=start, end=end)
    calls = sorted(op.call for op in ops if op.call <= end)
    largest = min(len(calls), settings.window_operations_max)
    size = min(_WINDOW_OPERATIONS_MIN, largest)
    while True:
        yield _Window(start=calls[-size], end=end)
        if size == largest:
            return
        size = min(2 * size, largest)


@attrs.frozen
class _Window:
    """The part of a key's history searched (theory, point 6).

    `start` None: from the beginning, the register starting at None.
    `end` None: to the end, every response counted.
    """

    start: int | None = None
    end: int | None = None

    def sees(self, op: Operation) -> bool:
        """Whether `op` was called by `end` and had not returned before `start`."""
        if self.end is not None and op.call > self.end:
            return False
        return self.start is None or op.ret is None or op.ret >= self.start

    def response(self, op: Operation) -> int | None:
        """The return tick of `op` inside the window, None if unknown there."""
        if op.ret is None or (self.end is not None and op.ret > self.end):
            return None
        return op.ret

    def before_start(self, op: Operation) -> bool:
        """Whether `op` may have taken effect before the window (so may be skipped)."""
        return self.start is not None and op.call < self.start


@attrs.frozen
class _Candidate:
    """An operation as the search sees it: `ret` is its effective deadline."""

    op: Operation
    ret: int
    #: At its deadline the search may skip it instead of backtracking: an
    #: unknown-outcome put never applied, or an operation that took effect
    #: before the window.
    may_skip: bool


def _datum(op: Operation) -> Value:
    """The value an operation carries: what a put writes or what a get read."""
    return op.value if op.kind == "put" else op.output


def _prepare(ops: Sequence[Operation], window: _Window) -> list[_Candidate]:
    """Drop what cannot matter and bound unknown puts (theory, points 2 and 6)."""
    seen = [op for op in ops if window.sees(op)]
    deadline: dict[Value, int] = {}
    for op in seen:
        ret = window.response(op)
        if op.kind == "get" and ret is not None:
            deadline[op.output] = max(ret, deadline.get(op.output, ret))
    candidates = []
    for op in seen:
        ret = window.response(op)
        if ret is not None:
            candidates.append(_Candidate(op, ret, may_skip=window.before_start(op)))
        elif op.kind == "put" and deadline.get(op.value, op.call - 1) >= op.call:
            candidates.append(_Candidate(op, deadline[op.value], may_skip=True))
    # Call order makes the linearized bitset a dense prefix plus a few bits.
    candidates.sort(key=lambda c: (c.op.call, c.op.op_id))
    return candidates


def _search(
    ops: Sequence[Operation], window: _Window, steps_max: int, record: bool = False
) -> tuple[list[_Candidate], _Found]:
    """Search one window of one key's history; return its candidates and the finding."""
    candidates = _prepare(ops, window)
    search = _Search(candidates, any_start=window.start is not None, record=record)
    return candidates, search.run(steps_max)


@attrs.frozen
class _Found:
    """What one search found, and where it got furthest (the deepest prefix)."""

    outcome: Outcome
    steps: int
    #: Where failing windows are likely, as (end tick, start tick or None)
    #: pairs: the effective return of the operation that stopped the deepest
    #: prefix; and for each value then orphaned (point 4), from just after the
    #: last return of a put of it to the last return of a get that read it.
    focus: tuple[tuple[int, int | None], ...] = ()
    # The rest is filled in by tracing searches only.
    #: The deepest prefix: (candidate index, skipped) pairs in linearization order.
    prefix: tuple[tuple[int, bool], ...] = ()
    #: The register after `prefix`, as text ("any value" at a window's start).
    state_text: str = ""
    #: The candidate that stopped it and the candidates pending at that point.
    stuck: int | None = None
    pending: tuple[int, ...] = ()
    #: Values some remaining get read but no remaining put writes, at that
    #: point, each with the ids of those gets.
    orphans: tuple[tuple[Value, tuple[int, ...]], ...] = ()


#: State id meaning "any value": the register at the start of a window.
_ANY = -1

#: Most focus pairs kept per stuck point: each costs up to
#: log2(window_operations_max) + 2 window searches.
_FOCUS_MAX = 4


def _config_key(linearized: int, state: int) -> tuple[int, int, int]:
    """Cache key for a search node: the bitset as (lowest zero bit, bits above), state.

    Lossless (every bit below the lowest zero bit is set) and small, where the
    raw bitset would cost one bit per operation of the key per cache entry.
    """
    low = (~linearized & (linearized + 1)).bit_length() - 1
    return (low, linearized >> low, state)


class _Move(enum.Enum):
    """How the search moved from a node to its child.

    Only a CHOSEN move leaves alternatives at its node. A FORCED read
    dominates them (point 4), and a SKIP is made at a return entry, past which
    nothing may be tried; so undoing either goes on to undo the move before.
    """

    CHOSEN = enum.auto()  # a call entry met in the scan, linearized
    FORCED = enum.auto()  # a pending get reading the current value, linearized
    SKIP = enum.auto()  # an operation dropped at its deadline (points 2 and 6)


class _Search:
    """Lowe's just-in-time depth-first search over one window of one key.

    See the module docstring, points 3 to 5. List entries: candidate i has call
    entry 2i and return entry 2i + 1; `head` and `tail` are sentinels. Values
    are interned to small ids (None is 0) so that states hash fast. Each stack
    item holds the call entry of the operation moved, the state before, and
    the kind of move.
    """

    def __init__(self, candidates: Sequence[_Candidate], any_start: bool, record: bool) -> None:
        self.candidates = candidates
        self.value_of: list[Value] = [None]
        ids: dict[Value, int] = {None: 0}
        self.values = [ids.setdefault(_datum(c.op), len(ids)) for c in candidates]
        self.value_of.extend(list(ids)[1:])
        self.is_put = [c.op.kind == "put" for c in candidates]
        self.may_skip = [c.may_skip for c in candidates]
        # A get that may be skipped (it took effect before the window) need not
        # be served, so it never makes its value orphaned.
        self.must_read = [c.op.kind == "get" and not c.may_skip for c in candidates]
        self._init_counts(len(ids))
        self.head = 2 * len(candidates)
        self.nxt, self.prv = _entry_list(candidates)
        self.steps = 0
        self.cache: set[tuple[int, int, int]] = set()
        self.stack: list[tuple[int, int, _Move]] = []
        self.linearized, self.remaining = 0, len(candidates)
        self.state = _ANY if any_start else 0
        #: Whether the search has just moved to a node it has not yet looked at.
        self.fresh = True
        #: Where `run` resumes.
        self.entry = self.nxt[self.head]
        self.record = record
        self.best = _Found(Outcome.VIOLATION, 0, state_text=self._state_text())
        self.best_depth, self.best_open = 0, True
        #: Values orphaned by dead moves at the deepest node.
        self.dead_orphans: set[int] = set()

    def _init_counts(self, value_count: int) -> None:
        """Count, per value id, the remaining gets that read it and puts that write it."""
        self.readers_left = [0] * value_count
        self.writers_left = [0] * value_count
        for value, is_put, must_read in zip(self.values, self.is_put, self.must_read, strict=True):
            if is_put:
                self.writers_left[value] += 1
            elif must_read:
                self.readers_left[value] += 1
        pairs = zip(self.readers_left, self.writers_left, strict=True)
        self.orphans = {value for value, (r, w) in enumerate(pairs) if r > 0 and w == 0}
        self.last_read_ret = [-1] * value_count
        self.last_write_ret: list[int | None] = [None] * value_count
        for candidate, value, must_read in zip(
            self.candidates, self.values, self.must_read, strict=True
        ):
            if must_read:
                self.last_read_ret[value] = max(self.last_read_ret[value], candidate.ret)
            elif candidate.op.kind == "put":
                last = self.last_write_ret[value]
                self.last_write_ret[value] = max(candidate.ret, -1 if last is None else last)

    def run(self, steps_max: int) -> _Found:
        """Search on until every candidate is linearized, none can be, or `steps_max`.

        Each turn of the loop is one step: entering a node, or visiting one
        entry. `steps_max` counts all steps, so a later call resumes exactly
        where an INCONCLUSIVE one stopped (call again only after INCONCLUSIVE).
        """
        entry = self.entry
        while self.remaining:
            if self.steps >= steps_max:
                self.entry = entry
                return self._found(Outcome.INCONCLUSIVE)
            self.steps += 1
            if self.fresh:
                entry = self._enter_node()
            elif entry & 1 == 0:
                entry = self._at_call(entry)
            else:
                entry = self._at_return(entry)
            if entry < 0:
                return self._found(Outcome.VIOLATION)
        return _Found(Outcome.OK, self.steps)

    def _found(self, outcome: Outcome) -> _Found:
        """The finding so far, with the deepest point traced."""
        return attrs.evolve(self.best, outcome=outcome, steps=self.steps)

    def _enter_node(self) -> int:
        """Make the forced read if there is one (point 4), else start the scan.

        Returns the entry to visit next, or -1 when the search is exhausted.
        """
        self.fresh = False
        reader = self._pending_reader()
        if reader < 0:
            return self.nxt[self.head]
        if self._maybe_push(reader, self.state, _Move.FORCED):
            return self.nxt[self.head]
        self._trace_stuck(reader >> 1)
        return self._backtrack()

    def _pending_reader(self) -> int:
        """The call entry of a pending get that reads the current value, or -1."""
        if self.state == _ANY:
            return -1
        entry = self.nxt[self.head]
        while entry & 1 == 0:  # pending calls come before the first return entry
            index = entry >> 1
            if self.values[index] == self.state and not self.is_put[index]:
                return entry
            entry = self.nxt[entry]
        return -1

    def _at_call(self, entry: int) -> int:
        """Linearize the called operation here if the model and cache allow it."""
        index = entry >> 1
        value = self.values[index]
        legal = self.is_put[index] or self.state in (value, _ANY)
        if legal and self._maybe_push(entry, value, _Move.CHOSEN):
            return self.nxt[self.head]
        return self.nxt[entry]

    def _at_return(self, entry: int) -> int:
        """The operation had to take effect by now: skip it if it may, else backtrack.

        Returns the entry to visit next, or -1 when the search is exhausted.
        """
        index = entry >> 1
        self._trace_stuck(index)
        if self.may_skip[index] and self._maybe_push(entry - 1, self.state, _Move.SKIP):
            return self.nxt[self.head]
        return self._backtrack()

    def _maybe_push(self, call_entry: int, new_state: int, move: _Move) -> bool:
        """Move to the node with this operation done, unless explored or dead."""
        index = call_entry >> 1
        linearized = self.linearized | (1 << index)
        key = _config_key(linearized, new_state)
        if key in self.cache:
            return False
        self.cache.add(key)
        old_state, self.state = self.state, new_state
        self._count(index, -1)
        if self._dead():
            self._trace_dead_end()
            self._count(index, +1)
            self.state = old_state
            return False
        self.stack.append((call_entry, old_state, move))
        self.linearized = linearized
        self.remaining -= 1
        self._lift(call_entry)
        self.fresh = True
        self._trace_depth()
        return True

    def _backtrack(self) -> int:
        """Undo moves back to one whose node still has entries to try.

        Undoing a move that exhausted its node (a skip, made at a return entry
        past which nothing may be tried, or a forced read, which dominates the
        alternatives) goes on to undo the move before it. Returns the entry to
        resume the scan from, or -1 when the stack is empty.
        """
        while self.stack:
            call_entry, self.state, move = self.stack.pop()
            index = call_entry >> 1
            self.linearized ^= 1 << index
            self.remaining += 1
            self._count(index, +1)
            self._unlift(call_entry)
            if move is _Move.CHOSEN:
                return self.nxt[call_entry]
        return -1

    def _count(self, index: int, delta: int) -> None:
        """Add `delta` to the remaining readers or writers of the candidate's value."""
        value = self.values[index]
        if self.is_put[index]:
            self.writers_left[value] += delta
        elif self.must_read[index]:
            self.readers_left[value] += delta
        else:
            return
        if self.readers_left[value] > 0 and self.writers_left[value] == 0:
            self.orphans.add(value)
        else:
            self.orphans.discard(value)

    def _dead(self) -> bool:
        """Whether a value other than the current one is orphaned (theory, point 4)."""
        spared = self.state == _ANY or self.state in self.orphans
        return len(self.orphans) > (1 if spared else 0)

    def _lift(self, call_entry: int) -> None:
        """Unlink a call entry and its return entry (which follows it in the list)."""
        nxt, prv = self.nxt, self.prv
        for entry in (call_entry, call_entry + 1):
            nxt[prv[entry]] = nxt[entry]
            prv[nxt[entry]] = prv[entry]

    def _unlift(self, call_entry: int) -> None:
        """Relink what `_lift` unlinked, in reverse order (dancing links)."""
        nxt, prv = self.nxt, self.prv
        for entry in (call_entry + 1, call_entry):
            nxt[prv[entry]] = entry
            prv[nxt[entry]] = entry

    def _trace_depth(self) -> None:
        """Remember the deepest prefix reached (its contents in tracing searches only)."""
        if len(self.stack) <= self.best_depth:
            return
        self.best_depth, self.best_open = len(self.stack), True
        self.dead_orphans = set()
        if self.record:
            prefix = tuple((entry >> 1, move is _Move.SKIP) for entry, _, move in self.stack)
            self.best = _Found(Outcome.VIOLATION, 0, prefix=prefix, state_text=self._state_text())
        else:
            self.best = _Found(Outcome.VIOLATION, 0)

    def _trace_dead_end(self) -> None:
        """At the deepest prefix, remember the values a refused move would orphan."""
        if self.best_open and len(self.stack) == self.best_depth:
            self.dead_orphans.update(self.orphans)

    def _trace_stuck(self, index: int) -> None:
        """At the deepest prefix, remember the candidate that stopped it, and where to look."""
        if not self.best_open or len(self.stack) != self.best_depth:
            return
        self.best_open = False
        focus: list[tuple[int, int | None]] = [(self.candidates[index].ret, None)]
        for value in sorted(self.dead_orphans | self.orphans):
            last_write = self.last_write_ret[value]
            start = None if last_write is None else last_write + 1
            focus.append((self.last_read_ret[value], start))
        self.best = attrs.evolve(self.best, stuck=index, focus=tuple(focus[:_FOCUS_MAX]))
        if self.record:
            self._trace_pending()

    def _trace_pending(self) -> None:
        """Record the pending candidates and the orphaned values' readers (tracing only)."""
        pending = []
        scan = self.nxt[self.head]
        while scan & 1 == 0:  # pending calls come before the first return entry
            pending.append(scan >> 1)
            scan = self.nxt[scan]
        readers: dict[int, list[int]] = {value: [] for value in sorted(self.orphans)}
        for index, candidate in enumerate(self.candidates):
            done = (self.linearized >> index) & 1
            if self.must_read[index] and not done and self.values[index] in readers:
                readers[self.values[index]].append(candidate.op.op_id)
        orphans = tuple((self.value_of[value], tuple(ids)) for value, ids in readers.items())
        self.best = attrs.evolve(self.best, pending=tuple(pending), orphans=orphans)

    def _state_text(self) -> str:
        """The register's current value, for explanations."""
        return "any value" if self.state == _ANY else repr(self.value_of[self.state])


def _entry_list(candidates: Sequence[_Candidate]) -> tuple[list[int], list[int]]:
    """Build the doubly-linked list of call and return entries in time order.

    At equal times calls come first, so a return and a call on the same tick
    are concurrent (module docstring, "Time").
    """
    count = len(candidates)
    order = sorted(
        [(c.op.call, 0, 2 * i) for i, c in enumerate(candidates)]
        + [(c.ret, 1, 2 * i + 1) for i, c in enumerate(candidates)]
    )
    head, tail = 2 * count, 2 * count + 1
    chain = [head, *(entry for _, _, entry in order), tail]
    nxt = [0] * (2 * count + 2)
    prv = [0] * (2 * count + 2)
    for before, after in itertools.pairwise(chain):
        nxt[before], prv[after] = after, before
    return nxt, prv


def _explain_violation(
    key: Key,
    ops: Sequence[Operation],
    window: _Window,
    candidates: Sequence[_Candidate],
    found: _Found,
    settings: CheckSettings,
) -> str:
    """Name the operations that fail, and say where the search got furthest."""
    limit = settings.explanation_operations_max
    lines = [f"key {key!r} is not linearizable ({len(ops)} operations)."]
    if window.start is not None:
        lines.append(
            f"Not even this part of it is: the {len(candidates)} operations below (called by "
            f"tick {window.end} and still running at tick {window.start}; responses after "
            f"tick {window.end} taken as unknown) have no linearization, whatever the key "
            f"held at tick {window.start} and whether or not those called before tick "
            f"{window.start} had already taken effect."
        )
        ordered = sorted((c.op for c in candidates), key=lambda op: (op.call, op.op_id))
        lines.extend(_describe_some(ordered, limit))
    lines.extend(_describe_prefix(candidates, found, limit))
    lines.extend(_describe_stuck(candidates, found, limit))
    lines.extend(_describe_orphans(ops, found, limit))
    if window.start is None:
        horizon = max((end for end, _ in found.focus), default=None)
        lines.extend(_list_operations(key, ops, horizon, limit))
    return "\n".join(lines)


def _describe_prefix(candidates: Sequence[_Candidate], found: _Found, limit: int) -> list[str]:
    """The deepest prefix, in linearization order, and the value it leaves."""
    if not found.prefix:
        return [f"No operation can be linearized first; the key holds {found.state_text}."]
    lines = [f"The search got furthest by linearizing {_count_text(len(found.prefix))}:"]
    shown = found.prefix[-limit:]
    if len(shown) < len(found.prefix):
        lines.append(f"  ... {len(found.prefix) - len(shown)} earlier operations")
    for index, skipped in shown:
        note = ""
        if skipped:
            unknown = not candidates[index].op.outcome_known
            note = "  (skipped: never applied)" if unknown else "  (skipped: before the window)"
        lines.append(f"  {candidates[index].op.describe()}{note}")
    lines.append(f"after which the key holds {found.state_text}.")
    return lines


def _describe_stuck(candidates: Sequence[_Candidate], found: _Found, limit: int) -> list[str]:
    """The operation that stopped the deepest prefix, and the pending ones."""
    if found.stuck is None:
        return []
    stuck = candidates[found.stuck]
    lines = [
        f"Then {stuck.op.describe()} must take effect by tick {stuck.ret}, but no order "
        "of the operations pending then lets it and the rest follow. Pending:"
    ]
    lines.extend(_describe_some([candidates[i].op for i in found.pending], limit))
    return lines


def _describe_orphans(ops: Sequence[Operation], found: _Found, limit: int) -> list[str]:
    """The values still to be read that nothing left can write, with who read and wrote them."""
    if not found.orphans:
        return []
    writers: dict[Value, list[int]] = {}
    for op in ops:
        if op.kind == "put":
            writers.setdefault(op.value, []).append(op.op_id)
    lines = ["Values still to be read that no remaining put writes:"]
    for value, readers in found.orphans:
        read_by = ", ".join(f"#{op_id}" for op_id in readers[:limit])
        written = writers.get(value, [])[-limit:]
        written_by = ", ".join(f"#{op_id}" for op_id in written) or "no put at all"
        lines.append(f"  {value!r}, read by {read_by}; written by {written_by}")
    return lines


def _count_text(count: int) -> str:
    """`count` operation(s), with the plural right."""
    return f"{count} operation" + ("" if count == 1 else "s")


def _describe_some(ops: Sequence[Operation], limit: int) -> list[str]:
    """Describe at most `limit` operations, one per line."""
    lines = [f"  {op.describe()}" for op in ops[:limit]]
    if len(ops) > limit:
        lines.append(f"  ... {len(ops) - limit} more")
    return lines


def _explain_inconclusive(key: Key, ops: Sequence[Operation], settings: CheckSettings) -> str:
    """Say which key was too hard, so the reader can raise the bound or shrink the run."""
    lines = [
        f"key {key!r}: gave up after search_steps_max={settings.search_steps_max} steps on "
        f"{len(ops)} operations, and no window of up to {settings.window_operations_max} "
        f"operations failed within window_steps_max={settings.window_steps_max}; neither "
        "a linearization nor a proof of violation was found."
    ]
    lines.extend(_list_operations(key, ops, None, settings.explanation_operations_max))
    return "\n".join(lines)


def _list_operations(
    key: Key, ops: Sequence[Operation], horizon: int | None, limit: int
) -> list[str]:
    """List the key's operations by call time: all of them, or `limit` around `horizon`.

    Around means mostly those called by `horizon` (the failure is there or
    before), and a few called after it.
    """
    ordered = sorted(ops, key=lambda op: (op.call, op.op_id))
    start, end = 0, len(ordered)
    if len(ordered) > limit:
        cut = len(ordered) if horizon is None else sum(op.call <= horizon for op in ordered)
        end = min(len(ordered), cut + limit // 4)
        start = max(0, end - limit)
    lines = [f"Operations on key {key!r} by call time:"]
    if start:
        lines.append(f"  ... {start} earlier operations")
    lines.extend(f"  {op.describe()}" for op in ordered[start:end])
    if end < len(ordered):
        lines.append(f"  ... {len(ordered) - end} later operations")
    return lines
