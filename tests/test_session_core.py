"""The sans-I/O session core: every limit and transition, with the clock passed in."""

from __future__ import annotations

from typing import Any

import pytest

from podium.auth.tokens import Principal
from podium.errors import WS_POLICY, WS_RATE
from podium.realtime.session_core import (
    Inbound,
    Limits,
    Queued,
    SessionCore,
    SessionState,
)

PLAYER = Principal(kind="user", user_id=7, family="fam-1", exp=1_000)


def core(now: float = 0.0, **limits: Any) -> SessionCore:
    return SessionCore(PLAYER, Limits(**limits), now)


def drain(c: SessionCore) -> list[str]:
    out = []
    while (text := c.next_outbound()) is not None:
        out.append(text)
        c.sent()
    return out


# -- outbound queue, lag, slow ------------------------------------------------------------


def test_pushes_queue_in_order_until_the_queue_is_full() -> None:
    c = core(queue_size=2)
    assert c.push("a", "a1", now=0) is Queued.QUEUED
    assert c.push("b", "b1", now=0) is Queued.QUEUED
    assert c.push("a", "a2", now=0) is Queued.SKIPPED
    assert (c.pushed, c.dropped) == (2, 1)
    assert drain(c) == ["a1", "b1", "a2"]


def test_a_lagging_stream_skips_until_the_drain_then_gets_its_latest_state() -> None:
    c = core(queue_size=1)
    c.push("a", "a1", now=0)
    c.push("a", "a2", now=0, latest=lambda: "snapshot-a")
    # The stream lags: even with room again, its pushes are skipped until the drain.
    assert c.next_outbound() == "a1"
    c.sent()
    assert c.push("a", "a3", now=0, latest=lambda: "snapshot-a3") is Queued.SKIPPED
    assert c.push("b", "b1", now=0) is Queued.QUEUED
    assert drain(c) == ["b1", "snapshot-a3"]
    # Drained: the stream is live again.
    assert c.push("a", "a4", now=0) is Queued.QUEUED


def test_a_latest_state_that_is_gone_sends_nothing() -> None:
    c = core(queue_size=1)
    c.push("a", "a1", now=0)
    c.push("a", "a2", now=0, latest=lambda: None)
    assert drain(c) == ["a1"]
    assert c.idle


def test_behind_longer_than_slow_after_is_slow() -> None:
    c = core(queue_size=1, slow_after=5.0)
    c.push("a", "a1", now=0)
    assert c.push("a", "a2", now=10.0) is Queued.SKIPPED  # lag starts here
    assert c.push("a", "a3", now=15.0) is Queued.SKIPPED  # exactly 5 s: not yet
    assert c.push("a", "a4", now=15.1) is Queued.SLOW


def test_the_drain_resets_the_lag_clock() -> None:
    c = core(queue_size=1, slow_after=5.0)
    c.push("a", "a1", now=0)
    c.push("a", "a2", now=1.0)
    drain(c)
    c.push("a", "a3", now=9.0)
    assert c.push("a", "a4", now=10.0) is Queued.SKIPPED
    assert c.push("a", "a5", now=14.0) is Queued.SKIPPED


def test_resync_replaces_what_a_lagging_stream_holds() -> None:
    c = core(queue_size=1)
    c.push("a", "a1", now=0)
    c.push("a", "a2", now=0, latest=lambda: "old-snapshot")
    assert c.resync("a", "fresh-snapshot") is Queued.SKIPPED
    assert drain(c) == ["a1", "fresh-snapshot"]
    assert c.resync("a", "again") is Queued.QUEUED
    assert c.dropped == 1  # a resync is not a dropped push


def test_replies_are_never_skipped_but_a_reader_that_stopped_is_slow() -> None:
    c = core(queue_size=2)
    for i in range(8):
        assert c.reply(f"r{i}") is Queued.QUEUED
    assert c.reply("one too many") is Queued.SLOW
    assert drain(c) == [f"r{i}" for i in range(8)]


def test_idle_only_when_nothing_is_pending_or_in_flight() -> None:
    c = core()
    assert c.idle
    c.wrote_directly()
    assert c.pushed == 1
    c.reply("r")
    assert not c.idle
    assert c.next_outbound() == "r"
    assert not c.idle  # in flight: a direct write now would overtake it
    with pytest.raises(RuntimeError, match="overtake"):
        c.wrote_directly()
    c.sent()
    assert c.idle


def test_writer_misuse_raises() -> None:
    c = core()
    with pytest.raises(RuntimeError, match="sent without a message in flight"):
        c.sent()
    c.reply("a")
    c.reply("b")
    c.next_outbound()
    with pytest.raises(RuntimeError, match="before the previous message was sent"):
        c.next_outbound()


# -- state ---------------------------------------------------------------------------------


def test_close_happens_once_and_drops_what_is_queued() -> None:
    c = core()
    c.reply("r")
    assert c.begin_close(WS_POLICY)
    assert (c.state, c.close_code) == (SessionState.CLOSING, 4008)
    assert not c.begin_close(WS_RATE)
    assert c.close_code == 4008
    assert c.next_outbound() is None
    for outcome in (c.push("a", "x", now=0), c.resync("a", "x"), c.reply("x")):
        assert outcome is Queued.REFUSED
    assert not c.idle
    c.finish()
    assert c.state is SessionState.CLOSED
    assert not c.begin_close(WS_POLICY)


# -- inbound: size, token bucket, strikes ---------------------------------------------------


def test_binary_and_oversized_frames() -> None:
    c = core(max_message_bytes=100)
    assert c.inbound(None, now=0) is Inbound.BINARY
    assert c.inbound("x" * 100, now=0) is Inbound.ACCEPT
    assert c.inbound("x" * 101, now=0) is Inbound.TOO_BIG
    # Counted in UTF-8 bytes, not characters.
    assert c.inbound("é" * 51, now=0) is Inbound.TOO_BIG


def test_the_token_bucket_allows_a_burst_then_refills_at_the_rate() -> None:
    c = SessionCore(PLAYER, Limits(messages_per_second=10, burst=5), now=0.0)
    # The bucket holds two seconds' worth when that is more than the burst.
    assert c.burst == 20
    assert [c.inbound("{}", now=0) for _ in range(21)].count(Inbound.ACCEPT) == 20
    assert c.inbound("{}", now=0) is Inbound.RATE_LIMITED
    assert c.inbound("{}", now=0.1) is Inbound.ACCEPT  # 0.1 s at 10/s: one token
    assert c.inbound("{}", now=0.1) is Inbound.RATE_LIMITED
    # Refills up to the burst, never beyond.
    assert [c.inbound("{}", now=100) for _ in range(21)].count(Inbound.ACCEPT) == 20


def test_a_per_socket_rate_overrides_the_limit() -> None:
    c = SessionCore(PLAYER, Limits(messages_per_second=20, burst=40), now=0.0, rate=50)
    assert (c.rate, c.burst) == (50, 100)


def test_strikes_close_over_the_limit_and_decay_one_per_second() -> None:
    c = core(max_abuse=3)
    assert [c.strike() for _ in range(3)] == [None, None, None]
    assert c.strike(WS_RATE) is WS_RATE
    c = core(max_abuse=3)
    for _ in range(3):
        c.strike()
    c.inbound("{}", now=2.0)  # two strikes decayed
    assert [c.strike(), c.strike()] == [None, None]
    assert c.strike() is WS_POLICY


def test_strikes_decay_to_zero_not_below() -> None:
    c = core(max_abuse=1)
    c.inbound("{}", now=1000.0)
    assert c.strike() is None
    assert c.strike() is WS_POLICY


def test_subscription_limit() -> None:
    c = core(max_subscriptions=2)
    assert c.admit_subscription(0)
    assert c.admit_subscription(1)
    assert not c.admit_subscription(2)


# -- token lifetime, re-auth, revocation ------------------------------------------------------


def test_expiry_counts_down_from_the_tokens_exp() -> None:
    c = core()
    assert c.expires_in(wall=400.0) == 600.0
    assert c.expires_in(wall=2_000.0) == 0.0  # expired already: close now
    forever = SessionCore(Principal(kind="service", credential="svc"), Limits(), 0.0)
    assert forever.expires_in(wall=0.0) is None


def test_reauth_takes_a_fresh_token_of_the_same_principal() -> None:
    c = core()
    fresh = Principal(kind="user", user_id=7, family="fam-2", exp=2_000)
    assert c.reauth(fresh) is PLAYER
    assert c.principal is fresh
    assert c.expires_in(wall=1_500.0) == 500.0
    assert c.subjects == ("fam-2",)


@pytest.mark.parametrize(
    "other",
    [
        Principal(kind="user", user_id=8, exp=2_000),
        Principal(kind="service", user_id=7, credential="svc", exp=2_000),
    ],
)
def test_reauth_refuses_someone_elses_token(other: Principal) -> None:
    c = core()
    assert c.reauth(other) is None
    assert c.principal is PLAYER


def test_reauth_on_a_closing_session_raises() -> None:
    c = core()
    c.begin_close(WS_POLICY)
    with pytest.raises(RuntimeError, match="re-authentication on a closing session"):
        c.reauth(PLAYER)


def test_a_revocation_may_name_the_family_or_the_credential() -> None:
    c = SessionCore(
        Principal(kind="user", user_id=7, family="fam", credential="user:7"), Limits(), 0.0
    )
    assert c.subjects == ("fam", "user:7")
    assert SessionCore(Principal(kind="user", user_id=1), Limits(), 0.0).subjects == ()
