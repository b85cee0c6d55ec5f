"""Membership changes, learners and leadership transfer (Raft §4, §3.10)."""

from __future__ import annotations

import random

import pytest

from rsm.consensus import ConfState, Entry, EntryKind, HardState, Message, MessageType, Node, Role
from rsm.consensus.membership import decode_conf, encode_conf
from rsm.consensus.types import ConfChange, ConfChangeKind
from rsm.errors import ConfChangeRefused, NotLeader, ProposalDropped
from rsm.storage.memory import MemoryStorage

from .harness import Cluster, make_config

IDS3 = ["n1", "n2", "n3"]


def add_node(c: Cluster, node_id: str) -> None:
    """Start a node that knows nothing about the group (as a new machine would)."""
    c.storages[node_id] = MemoryStorage(ConfState())
    c.nodes[node_id] = c._new_node(node_id)
    c.applied[node_id] = []
    c.read_states[node_id] = []
    c.dropped_reads[node_id] = []


def change(kind: ConfChangeKind, node_id: str) -> ConfChange:
    return ConfChange(kind, node_id)


def grown_cluster() -> Cluster:
    c = Cluster(IDS3)
    c.elect("n1")
    add_node(c, "n4")
    c.nodes["n1"].propose_conf_change(change(ConfChangeKind.ADD_LEARNER, "n4"))
    c.stabilize()
    c.tick_all(2)
    return c


def test_a_learner_receives_the_log_but_does_not_vote_or_count() -> None:
    c = grown_cluster()
    n1 = c.nodes["n1"]
    assert frozenset({"n4"}) == n1.conf.learners
    assert frozenset({"n4"}) == c.nodes["n4"].conf.learners  # it learned its role from the log
    n1.propose(b"x")
    c.stabilize()
    c.tick_all(1)
    assert [b"x"] == c.commands("n4")
    # With n2 and n3 cut off, n1 + the learner are no majority: nothing commits.
    c.blocked |= {("n1", "n2"), ("n2", "n1"), ("n1", "n3"), ("n3", "n1")}
    commit = n1.log.committed
    n1.propose(b"y")
    c.stabilize()
    assert commit == n1.log.committed
    # A learner never campaigns.
    c.tick("n4", 100)
    assert Role.FOLLOWER == c.nodes["n4"].role


def test_promoting_a_caught_up_learner() -> None:
    c = grown_cluster()
    c.nodes["n1"].propose_conf_change(change(ConfChangeKind.ADD_VOTER, "n4"))
    c.stabilize()
    c.tick_all(2)
    for node_id in ("n1", "n2", "n3", "n4"):
        assert frozenset({"n1", "n2", "n3", "n4"}) == c.nodes[node_id].conf.voters
    assert frozenset({"n1", "n2", "n3", "n4"}) == c.nodes["n1"].committed_conf.voters


def _learner_lagging(lag: int) -> Cluster:
    c = Cluster(IDS3, config=make_config(promote_lag_entries_max=5))
    c.elect("n1")
    add_node(c, "n4")
    n1 = c.nodes["n1"]
    n1.propose_conf_change(change(ConfChangeKind.ADD_LEARNER, "n4"))
    c.stabilize()
    c.isolate("n4")
    for _ in range(lag):
        n1.propose(b"x")
    c.stabilize()
    assert lag == n1.log.last_index() - n1.progress["n4"].match
    return c


def test_promotion_waits_until_the_learner_has_caught_up() -> None:
    c = _learner_lagging(6)  # one past promote_lag_entries_max
    with pytest.raises(ConfChangeRefused, match="6 entries behind"):
        c.nodes["n1"].propose_conf_change(change(ConfChangeKind.ADD_VOTER, "n4"))
    c.heal()
    c.tick_all(3)
    c.nodes["n1"].propose_conf_change(change(ConfChangeKind.ADD_VOTER, "n4"))  # caught up now


def test_promotion_at_the_lag_limit_is_accepted() -> None:
    c = _learner_lagging(5)
    c.blocked.clear()  # (n4 is counted healthy only if it answered recently)
    c.tick_all(1)
    c.isolate("n4")
    for _ in range(5 - (c.nodes["n1"].log.last_index() - c.nodes["n1"].progress["n4"].match)):
        c.nodes["n1"].propose(b"x")
    c.stabilize()
    assert 5 == c.nodes["n1"].log.last_index() - c.nodes["n1"].progress["n4"].match
    c.nodes["n1"].propose_conf_change(change(ConfChangeKind.ADD_VOTER, "n4"))


def test_only_one_change_at_a_time() -> None:
    c = Cluster(IDS3)
    c.elect("n1")
    add_node(c, "n4")
    add_node(c, "n5")
    c.isolate("n1")  # keep the first change uncommitted
    n1 = c.nodes["n1"]
    n1.propose_conf_change(change(ConfChangeKind.ADD_LEARNER, "n4"))
    with pytest.raises(ProposalDropped, match="already in progress"):
        n1.propose_conf_change(change(ConfChangeKind.ADD_LEARNER, "n5"))


def test_a_new_leader_commits_in_its_term_before_changing() -> None:
    c = Cluster(IDS3)
    n1 = c.nodes["n1"]
    n1.campaign()
    c.stabilize()
    # Freshly elected, but take a leader whose no-op has not committed yet:
    c2 = Cluster(IDS3, config=make_config(pre_vote=False))
    m = c2.nodes["n1"]
    m.campaign()
    c2.handle_ready("n1")
    c2.inbox.clear()
    m.step(Message(type=MessageType.VOTE_RESP, src="n2", dst="n1", term=m.term))
    assert Role.LEADER == m.role
    with pytest.raises(ProposalDropped, match="commit an entry of its term"):
        m.propose_conf_change(change(ConfChangeKind.REMOVE, "n3"))


def test_changes_that_would_lose_the_quorum_are_refused() -> None:
    c = Cluster(IDS3)
    c.elect("n1")
    c.crash("n3")
    c.tick_all(c.config.election_timeout_ticks + 1)  # n3 is now known to be unreachable
    n1 = c.nodes["n1"]
    with pytest.raises(ConfChangeRefused, match="without a quorum"):
        n1.propose_conf_change(change(ConfChangeKind.REMOVE, "n2"))
    with pytest.raises(ConfChangeRefused, match="already a voter"):
        n1.propose_conf_change(change(ConfChangeKind.ADD_VOTER, "n2"))
    with pytest.raises(ConfChangeRefused, match="not a member"):
        n1.propose_conf_change(change(ConfChangeKind.REMOVE, "n9"))
    # Removing the unreachable node itself is fine: 2 voters, both live.
    n1.propose_conf_change(change(ConfChangeKind.REMOVE, "n3"))
    c.stabilize()
    assert frozenset({"n1", "n2"}) == n1.committed_conf.voters


def test_a_removed_leader_steps_down_once_the_change_commits() -> None:
    c = Cluster(IDS3)
    c.elect("n1")
    n1 = c.nodes["n1"]
    n1.propose_conf_change(change(ConfChangeKind.REMOVE, "n1"))
    c.stabilize()
    assert Role.FOLLOWER == n1.role
    assert frozenset({"n2", "n3"}) == c.nodes["n2"].conf.voters
    for _ in range(40):
        c.tick_all()
    leaders = [i for i, n in c.nodes.items() if n.role == Role.LEADER]
    assert 1 == len(leaders) and leaders[0] in ("n2", "n3")


def test_a_removed_node_does_not_disrupt_the_group() -> None:
    c = Cluster(IDS3, config=make_config(pre_vote=False, check_quorum=False))
    c.elect("n1")
    c.isolate("n3")
    c.nodes["n1"].propose_conf_change(change(ConfChangeKind.REMOVE, "n3"))
    c.stabilize()
    term = c.nodes["n1"].term
    c.heal()
    # n3 never learned it was removed; it campaigns with ever higher terms.
    for _ in range(60):
        c.tick("n3")
        c.stabilize()
    assert c.nodes["n3"].term > term
    assert term == c.nodes["n1"].term  # its vote requests were ignored
    assert Role.LEADER == c.nodes["n1"].role


def test_leadership_transfer_hands_over_and_refuses_proposals_meanwhile() -> None:
    c = Cluster(IDS3)
    c.elect("n1")
    c.nodes["n1"].propose(b"x")
    c.stabilize()
    c.isolate("n2")
    c.nodes["n1"].propose(b"y")  # n2 lags now: the leader must catch it up first
    c.stabilize()
    n1 = c.nodes["n1"]
    n1.transfer_leadership("n2")
    with pytest.raises(ProposalDropped, match="transfer"):
        n1.propose(b"z")
    c.heal()
    c.tick_all(2)
    assert Role.LEADER == c.nodes["n2"].role
    assert c.nodes["n2"].term == n1.term
    assert "n2" == n1.leader_id


def test_leadership_transfer_gives_up_after_an_election_timeout() -> None:
    c = Cluster(IDS3)
    c.elect("n1")
    c.isolate("n2")
    n1 = c.nodes["n1"]
    n1.transfer_leadership("n2")
    c.tick("n1", c.config.election_timeout_ticks)
    assert n1.transfer_target is None
    assert Role.LEADER == n1.role
    n1.propose(b"accepted again")
    with pytest.raises(NotLeader):
        c.nodes["n3"].transfer_leadership("n1")
    with pytest.raises(ConfChangeRefused):
        n1.transfer_leadership("n9")


def test_configuration_survives_restart_committed_and_pending() -> None:
    storage = MemoryStorage(ConfState(voters=frozenset(IDS3)))
    c1 = ConfState(voters=frozenset({"n1", "n2", "n3"}), learners=frozenset({"n4"}))
    c2 = ConfState(voters=frozenset({"n1", "n2", "n3", "n4"}))
    storage.save(
        HardState(term=1, commit=2),
        [Entry(1, 1, EntryKind.NOOP), Entry(2, 1, EntryKind.CONFIG, encode_conf(c1)), Entry(3, 1, EntryKind.CONFIG, encode_conf(c2))],
    )
    node = Node("n1", make_config(), storage, random.Random(0))
    assert c2 == node.conf  # in effect as soon as it is in the log
    assert c1 == node.committed_conf
    # A conflicting append removes the pending change: the committed one is back.
    node.step(Message(type=MessageType.APPEND, src="n2", dst="n1", term=2, index=2, log_term=1,
                      entries=(Entry(3, 2, EntryKind.NOOP),), commit=2))
    assert c1 == node.conf


def test_a_snapshot_carries_the_configuration() -> None:
    config = make_config(snapshot_chunk_bytes=8, check_quorum=False)
    c = Cluster(IDS3, config=config)
    c.elect("n1")
    add_node(c, "n4")
    c.nodes["n1"].propose_conf_change(change(ConfChangeKind.ADD_LEARNER, "n4"))
    c.crash("n4")
    c.stabilize()
    c.tick_all(1)
    c.snapshot("n1", b"state")
    c.restart("n4")
    c.tick_all(3)
    assert frozenset({"n4"}) == c.nodes["n4"].conf.learners
    assert frozenset({"n4"}) == c.storages["n4"].snapshot_meta().conf.learners


def test_conf_entries_decode_strictly() -> None:
    conf = ConfState(voters=frozenset({"a"}), learners=frozenset({"b"}))
    assert conf == decode_conf(encode_conf(conf))
    for bad in (b"", b"\xc1", encode_conf(ConfState(voters=frozenset({"a"}), learners=frozenset({"a"})))):
        with pytest.raises(ValueError):
            decode_conf(bad)
