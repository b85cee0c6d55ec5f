"""The dissertation's sentences, one test each, on a scripted cluster.

Each test cites the section it checks ("Raft §5.2"). The harness delivers
messages reliably; faults are scripted by isolating, crashing and restarting.
"""

from __future__ import annotations

import pytest

from rsm.consensus import Config, Entry, EntryKind, HardState, Message, MessageType, Role
from rsm.errors import ConfigError, NotLeader, ProposalDropped

from .harness import Cluster, make_config

IDS3 = ["n1", "n2", "n3"]
IDS5 = ["n1", "n2", "n3", "n4", "n5"]


def test_single_node_elects_itself_and_commits() -> None:
    c = Cluster(["n1"])
    c.tick("n1", 30)
    c.stabilize()
    assert c.nodes["n1"].role == Role.LEADER
    c.nodes["n1"].propose(b"x")
    c.stabilize()
    assert [b"x"] == c.commands("n1")


def test_election_timeout_starts_an_election_and_a_leader_wins() -> None:
    """Raft §5.2: a follower that hears nothing campaigns; a majority elects it."""
    c = Cluster(IDS3)
    for _ in range(40):
        c.tick_all()
    leaders = [n for n in c.nodes.values() if n.role == Role.LEADER]
    assert 1 == len(leaders)
    assert all(n.leader_id == leaders[0].id for n in c.nodes.values())


def test_new_leader_commits_a_noop_of_its_term() -> None:
    """Raft §6.4: a leader commits a blank entry at the start of its term."""
    c = Cluster(IDS3)
    c.elect("n1")
    for node_id in IDS3:
        kinds = [(e.kind, e.term) for e in c.applied[node_id]]
        assert [(EntryKind.NOOP, c.nodes["n1"].term)] == kinds


def test_proposals_are_replicated_and_applied_in_order_everywhere() -> None:
    """Raft §5.3: committed entries are applied by every server in log order."""
    c = Cluster(IDS3)
    c.elect("n1")
    for i in range(20):
        c.nodes["n1"].propose(f"c{i}".encode())
    c.stabilize()
    c.tick_all(2)  # heartbeats carry the final commit index to followers
    expected = [f"c{i}".encode() for i in range(20)]
    for node_id in IDS3:
        assert expected == c.commands(node_id)


def test_only_the_leader_accepts_proposals() -> None:
    c = Cluster(IDS3)
    c.elect("n1")
    with pytest.raises(NotLeader) as info:
        c.nodes["n2"].propose(b"x")
    assert "n1" == info.value.leader_hint


def test_vote_is_granted_once_per_term() -> None:
    """Raft §5.2: each server votes for at most one candidate in a given term."""
    c = Cluster(IDS3, config=make_config(pre_vote=False, check_quorum=False))
    n3 = c.nodes["n3"]
    n3.step(Message(type=MessageType.VOTE, src="n1", dst="n3", term=5))
    n3.step(Message(type=MessageType.VOTE, src="n2", dst="n3", term=5))
    rd = n3.ready()
    votes = [(m.dst, m.reject) for m in rd.messages if m.type == MessageType.VOTE_RESP]
    assert [("n1", False), ("n2", True)] == votes
    assert HardState(term=5, vote="n1", commit=0) == rd.hard_state


def test_vote_responses_wait_for_persistence() -> None:
    """The vote is durable before the grant leaves: grants are never in messages_now."""
    c = Cluster(IDS3, config=make_config(pre_vote=False, check_quorum=False))
    n3 = c.nodes["n3"]
    n3.step(Message(type=MessageType.VOTE, src="n1", dst="n3", term=2))
    rd = n3.ready()
    assert [] == [m for m in rd.messages_now if m.type == MessageType.VOTE_RESP]
    assert 1 == len([m for m in rd.messages if m.type == MessageType.VOTE_RESP])


def test_vote_refused_to_a_candidate_with_a_less_up_to_date_log() -> None:
    """Raft §5.4.1: the voter denies its vote if its own log is more up to date."""
    c = Cluster(IDS3, config=make_config(pre_vote=False, check_quorum=False))
    c.elect("n1")
    c.nodes["n1"].propose(b"x")
    c.stabilize()
    n2 = c.nodes["n2"]
    last_index = n2.log.last_index()
    stale = Message(type=MessageType.VOTE, src="n3", dst="n2", term=9, index=last_index - 1, log_term=n2.log.last_term())
    n2.step(stale)
    rd = n2.ready()
    assert [True] == [m.reject for m in rd.messages if m.type == MessageType.VOTE_RESP]


def test_stale_term_append_is_rejected_and_answered_with_the_current_term() -> None:
    """Raft §5.1: a server rejects requests with a stale term, telling its own."""
    c = Cluster(IDS3)
    c.elect("n1")
    term = c.nodes["n2"].term
    c.nodes["n2"].step(Message(type=MessageType.APPEND, src="n3", dst="n2", term=term - 1, index=0, log_term=0))
    rd = c.nodes["n2"].ready()
    replies = [(m.type, m.term, m.reject) for m in rd.messages if m.dst == "n3"]
    assert [(MessageType.APPEND_RESP, term, True)] == replies


def test_prevote_keeps_a_rejoining_node_from_disrupting_the_leader() -> None:
    """Raft §9.6: a partitioned server's elections do not raise terms."""
    c = Cluster(IDS3)
    c.elect("n1")
    term = c.nodes["n1"].term
    c.isolate("n3")
    for _ in range(50):
        c.tick_all()
    assert term == c.nodes["n3"].term  # pre-votes failed, so no term was raised
    c.heal()
    for _ in range(5):
        c.tick_all()
    assert Role.LEADER == c.nodes["n1"].role
    assert term == c.nodes["n1"].term


def test_without_prevote_a_rejoining_node_raises_the_term() -> None:
    """The counterpart of the previous test: it fails if pre-vote were ignored."""
    c = Cluster(IDS3, config=make_config(pre_vote=False, check_quorum=False))
    c.elect("n1")
    term = c.nodes["n1"].term
    c.isolate("n3")
    for _ in range(50):
        c.tick_all()
    assert c.nodes["n3"].term > term


def test_check_quorum_makes_an_isolated_leader_step_down() -> None:
    """Raft §6.2: a leader steps down after an election timeout without a majority."""
    c = Cluster(IDS3)
    c.elect("n1")
    c.isolate("n1")
    c.tick("n1", c.config.election_timeout_ticks * 2)
    assert Role.FOLLOWER == c.nodes["n1"].role


def _leader_over_old_entries(bugs: frozenset[str] = frozenset()):
    """n1 holds entries 1..2 of term 1 and wins term 2 with n2's vote."""
    import random

    from rsm.consensus import ConfState, Entry, Node
    from rsm.storage.memory import MemoryStorage

    storage = MemoryStorage(ConfState(voters=frozenset(IDS3)))
    storage.save(HardState(term=1), [Entry(index=1, term=1), Entry(index=2, term=1)])
    n1 = Node("n1", make_config(pre_vote=False), storage, random.Random(0), bugs=bugs)
    n1.campaign()
    n1.advance(n1.ready())
    n1.step(Message(type=MessageType.VOTE_RESP, src="n2", dst="n1", term=2))
    assert Role.LEADER == n1.role
    rd = n1.ready()
    storage.save(rd.hard_state, rd.entries)  # the no-op of term 2 at index 3
    n1.advance(rd)
    return n1


def test_old_term_entry_on_a_majority_is_not_committed_by_counting() -> None:
    """Raft §5.4.2 (figure 8): only entries of the leader's current term are
    committed by counting replicas; older ones are committed indirectly."""
    n1 = _leader_over_old_entries()
    n1.step(Message(type=MessageType.APPEND_RESP, src="n2", dst="n1", term=2, index=2))
    assert 0 == n1.log.committed  # index 2 (term 1) is on a majority, yet not committed
    n1.step(Message(type=MessageType.APPEND_RESP, src="n2", dst="n1", term=2, index=3))
    assert 3 == n1.log.committed  # the current-term no-op commits everything before it


def test_the_commit_previous_term_bug_is_observable_here() -> None:
    """The injected bug really breaks the rule above (so the simulator test means something)."""
    n1 = _leader_over_old_entries(frozenset({"commit_previous_term"}))
    n1.step(Message(type=MessageType.APPEND_RESP, src="n2", dst="n1", term=2, index=2))
    assert 2 == n1.log.committed


def test_follower_with_divergent_log_is_repaired_quickly() -> None:
    """Raft §5.3: conflict hints let the leader skip a whole term per round trip."""
    c = Cluster(IDS3, config=make_config(check_quorum=False, append_entries_max=1000, append_bytes_max=1 << 24))
    c.elect("n3")
    c.isolate("n3")
    for i in range(200):
        c.nodes["n3"].propose(f"lost{i}".encode())  # never committed
    c.stabilize()
    c.heal()
    c.isolate("n3")
    c.nodes["n1"].campaign()
    c.stabilize()
    for i in range(10):
        c.nodes["n1"].propose(f"kept{i}".encode())
    c.stabilize()
    c.sent.clear()
    c.heal()
    c.tick_all(3)
    rejections = [m for m in c.sent if m.type == MessageType.APPEND_RESP and m.reject and m.src == "n3"]
    assert len(rejections) <= 2  # one term to skip, not 200 entries
    assert c.nodes["n1"].log.entries(1, c.nodes["n1"].log.last_index() + 1) == c.nodes["n3"].log.entries(
        1, c.nodes["n3"].log.last_index() + 1
    )


def test_appends_respect_entry_and_byte_limits() -> None:
    config = make_config(append_entries_max=3, append_bytes_max=1 << 20, inflight_messages_max=1000)
    c = Cluster(IDS3, config=config)
    c.elect("n1")
    c.sent.clear()
    for _i in range(10):
        c.nodes["n1"].propose(b"x" * 10)
    c.stabilize()
    sizes = [len(m.entries) for m in c.sent if m.type == MessageType.APPEND and m.entries]
    assert max(sizes) == 3  # at the limit, never past it

    config = make_config(append_entries_max=100, append_bytes_max=100, inflight_messages_max=1000)
    c = Cluster(IDS3, config=config)
    c.elect("n1")
    c.sent.clear()
    for _i in range(10):
        c.nodes["n1"].propose(b"x" * 40)  # 56 accounted bytes each: one per message
    c.stabilize()
    sizes = [len(m.entries) for m in c.sent if m.type == MessageType.APPEND and m.entries]
    assert {1} == set(sizes)


def test_inflight_appends_are_bounded_per_follower() -> None:
    """Flow control: at most inflight_messages_max unacknowledged appends."""
    config = make_config(append_entries_max=1, inflight_messages_max=4, check_quorum=False)
    c = Cluster(IDS3, config=config)
    c.elect("n1")
    c.blocked.update({("n2", "n1"), ("n3", "n1")})  # acknowledgements are lost
    c.sent.clear()
    for _i in range(20):
        c.nodes["n1"].propose(b"x")
        c.stabilize()
    to_n2 = [m for m in c.sent if m.type == MessageType.APPEND and m.dst == "n2" and m.entries]
    assert 4 == len(to_n2)
    c.heal()
    c.tick_all(5)
    assert 20 == len(c.commands("n2"))


def test_leader_appends_may_leave_before_persistence_but_acks_may_not() -> None:
    c = Cluster(IDS3)
    c.elect("n1")
    c.nodes["n1"].propose(b"x")
    rd = c.nodes["n1"].ready()
    assert any(m.type == MessageType.APPEND and m.entries for m in rd.messages_now)
    c.nodes["n1"].advance(rd)


def test_proposal_limits() -> None:
    config = make_config(entry_bytes_max=100, uncommitted_entries_max=5, check_quorum=False)
    c = Cluster(IDS3, config=config)
    c.elect("n1")
    n1 = c.nodes["n1"]
    n1.propose(b"x" * 100)  # exactly at the limit
    with pytest.raises(ProposalDropped, match="entry_bytes_max"):
        n1.propose(b"x" * 101)
    c.isolate("n1")  # nothing commits now
    for _ in range(4):
        n1.propose(b"y")
    with pytest.raises(ProposalDropped, match="uncommitted_entries_max"):
        n1.propose(b"z")


def test_read_index_on_leader_waits_for_a_heartbeat_quorum() -> None:
    """Raft §6.4: the leader confirms it is still leader before answering a read."""
    c = Cluster(IDS3)
    c.elect("n1")
    c.isolate("n1")
    c.nodes["n1"].read_index(b"r1")
    c.stabilize()
    assert [] == c.read_states["n1"]  # no quorum heard: no answer
    c.heal()
    c.tick_all(1)
    assert [b"r1"] == [rs.request_id for rs in c.read_states["n1"]]
    assert c.read_states["n1"][0].index == c.nodes["n1"].log.committed


def test_read_index_from_a_follower_goes_through_the_leader() -> None:
    c = Cluster(IDS3)
    c.elect("n1")
    c.nodes["n1"].propose(b"x")
    c.stabilize()
    c.nodes["n2"].read_index(b"f1")
    c.stabilize()
    [rs] = c.read_states["n2"]
    assert b"f1" == rs.request_id
    assert c.nodes["n1"].log.committed == rs.index


def test_reads_are_dropped_when_leadership_is_lost() -> None:
    c = Cluster(IDS3)
    c.elect("n1")
    c.isolate("n1")
    c.nodes["n1"].read_index(b"r1")
    c.tick("n1", c.config.election_timeout_ticks * 2)
    c.stabilize()
    assert [b"r1"] == c.dropped_reads["n1"]


def test_follower_behind_the_compacted_prefix_gets_a_chunked_snapshot() -> None:
    """Raft §5 (log compaction): InstallSnapshot in chunks, then normal replication."""
    config = make_config(snapshot_chunk_bytes=10, snapshot_inflight_chunks_max=2, check_quorum=False)
    c = Cluster(IDS3, config=config)
    c.elect("n1")
    c.crash("n3")
    for i in range(10):
        c.nodes["n1"].propose(f"c{i}".encode())
    c.stabilize()
    for node_id in ("n1", "n2"):
        c.snapshot(node_id, b"S" * 35)
    c.restart("n3")
    c.sent.clear()
    c.nodes["n1"].propose(b"after")
    c.stabilize()
    c.tick_all(3)
    chunks = [m for m in c.sent if m.type == MessageType.SNAPSHOT and m.dst == "n3"]
    assert [0, 10, 20, 30] == sorted({m.offset for m in chunks})
    assert b"S" * 35 == c.storages["n3"].snapshot_data()
    assert [b"after"] == c.commands("n3")  # entries after the snapshot were replicated normally
    assert c.nodes["n1"].log.last_index() == c.nodes["n3"].log.last_index()


def make_config_validation() -> None:
    Config(heartbeat_interval_ticks=1, election_timeout_ticks=2).validate()
    with pytest.raises(ConfigError, match="must exceed"):
        Config(heartbeat_interval_ticks=2, election_timeout_ticks=2).validate()
    with pytest.raises(ConfigError, match="append_entries_max"):
        Config(append_entries_max=0).validate()


def test_ready_must_alternate_with_advance() -> None:
    c = Cluster(["n1"])
    c.nodes["n1"].campaign()
    c.nodes["n1"].ready()
    from rsm.errors import InvariantViolation

    with pytest.raises(InvariantViolation):
        c.nodes["n1"].ready()


def test_a_batch_cut_short_while_it_was_being_written_is_not_marked_stable() -> None:
    """Found by the simulator (seed 250, 5 nodes, membership): entries 4-5 are
    being written when a new leader's append replaces them with a shorter log;
    advance() must not treat the shorter log as durable."""
    c = Cluster(IDS3, config=make_config(check_quorum=False, pre_vote=False))
    c.elect("n1")
    n2 = c.nodes["n2"]
    t = n2.term
    n2.step(Message(type=MessageType.APPEND, src="n1", dst="n2", term=t, index=1, log_term=t,
                    entries=(Entry(2, t), Entry(3, t)), commit=1))
    rd = n2.ready()  # entries 2-3 are being written...
    n2.step(Message(type=MessageType.APPEND, src="n3", dst="n2", term=t + 1, index=1, log_term=t,
                    entries=(Entry(2, t + 1),), commit=1))  # ...when a new leader replaces them
    c.storages["n2"].save(rd.hard_state, rd.entries)
    n2.advance(rd)
    assert [Entry(2, t + 1)] == n2.log.unstable  # still to be written
    assert 1 == n2.log.stable_last_index()


@pytest.mark.parametrize("cache", [0, 8192])
def test_recent_entries_are_replicated_from_memory(cache: int) -> None:
    """With the log cache on, sending just-written entries reads no storage;
    with it off, the same replication reads them back (and is just as correct)."""
    c = Cluster(IDS3, config=make_config(log_cache_entries_max=cache, append_entries_max=4, inflight_messages_max=1))
    c.elect("n1")
    reads = []
    storage = c.storages["n1"]
    original = storage.entries
    storage.entries = lambda lo, hi, max_bytes=None: reads.append((lo, hi)) or original(lo, hi, max_bytes)  # type: ignore[method-assign]
    for i in range(20):
        c.nodes["n1"].propose(f"c{i}".encode())
    c.stabilize()
    c.tick_all(2)
    assert [f"c{i}".encode() for i in range(20)] == c.commands("n2")
    assert (reads == []) == (cache > 0)
