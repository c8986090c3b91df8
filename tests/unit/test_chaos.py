"""Chaos verdicts: what the clients saw during a host's loss, against what the design report says it does."""

from __future__ import annotations

import chaos
import design
import pytest
import webstack_probe as probe

LOST_AT = 100.0


def outcome(started: float, seconds: float = 0.02, status: int | None = 200, write: bool = False) -> probe.Outcome:
    return probe.Outcome(started, seconds, status, "" if status else "timed out", write)


def loss(effect: str, gap: float | None = 0.0) -> design.Loss:
    return design.Loss("h", effect, (effect,), "why", gap)


def steady(until: float = 110.0) -> list[probe.Outcome]:
    """A request every 0.05 s from 99 s on, every fifth a write, all answered."""
    count = int((until - 99.0) / 0.05)
    return [outcome(99.0 + n * 0.05, write=n % 5 == 4) for n in range(count)]


def test_observe_counts_reads_writes_and_what_was_in_flight_at_the_loss() -> None:
    outcomes = [*steady(), outcome(99.9, 10.0, 504, write=True), outcome(100.5, 0.1, None),
                outcome(103.0, 0.1, 503, write=True)]
    seen = chaos.observe(outcomes, LOST_AT, gap_s=1.5)
    assert (seen.reads_failed, seen.writes_failed, seen.failed_in_flight, seen.failed_late) == (1, 2, 1, 1)
    assert seen.requests == len(outcomes) and seen.writes == 44 + 2
    assert seen.max_gap_s == 0.05
    assert (seen.failed_write_statuses, seen.slowest_failed_write_s) == ((503,), 0.1)
    assert seen.failures == ("504 x1", "timed out x1", "503 x1") and seen.failed_between_s == (-0.1, 3.0)
    assert "failures: 504 x1, timed out x1, 503 x1, started -0.1 to +3.0 s from the loss" in seen.text()


def test_observe_measures_the_longest_time_nobody_was_answered() -> None:
    outcomes = [o for o in steady() if not 100.0 <= o.started < 101.2]
    assert chaos.observe(outcomes, LOST_AT, gap_s=0).max_gap_s == pytest.approx(1.25, abs=0.01)


def test_a_spof_that_cost_no_request_means_the_report_is_wrong() -> None:
    ok, why = chaos.verdict(loss(design.SITE_DOWN, None), chaos.observe(steady(), LOST_AT, 0))
    assert not ok and "single point of failure" in why
    down = [*steady(), outcome(101.0, 1.0, None)]
    assert chaos.verdict(loss(design.SITE_DOWN, None), chaos.observe(down, LOST_AT, 0, returned_at=106.0))[0]
    # A failure before the loss or after the host's return does not make it a single point of failure.
    around = [*steady(), outcome(99.5, 0.1, 503), outcome(107.0, 0.1, 503)]
    seen = chaos.observe(around, LOST_AT, 0, began=99.8, returned_at=106.0)
    assert seen.failed_while_lost == 0 and not chaos.verdict(loss(design.SITE_DOWN, None), seen)[0]


def test_only_a_request_under_way_when_the_loss_began_counts_as_in_flight() -> None:
    outcomes = [*steady(), outcome(99.5, 0.1, 503, write=True), outcome(99.7, 5.0, 504, write=True),
                outcome(99.9, 1.0, 504, write=True)]
    seen = chaos.observe(outcomes, LOST_AT, 0, began=99.8)
    assert seen.failed_in_flight == 2  # the one that had ended before the kill began is not excused


def test_writes_down_needs_failed_writes_and_no_failed_read() -> None:
    writes_failed = [*steady(), outcome(102.0, 0.5, 503, write=True)]
    assert chaos.verdict(loss(design.WRITES_DOWN), chaos.observe(writes_failed, LOST_AT, 0)) == (
        True, "reads went on, writes failed, as reported")
    assert not chaos.verdict(loss(design.WRITES_DOWN), chaos.observe(steady(), LOST_AT, 0))[0]
    read_failed = [*writes_failed, outcome(102.0, 0.5, 502)]
    ok, why = chaos.verdict(loss(design.WRITES_DOWN), chaos.observe(read_failed, LOST_AT, 0))
    assert not ok and "1 read(s) failed" in why


def test_a_failover_may_cost_requests_within_its_gap_only() -> None:
    within = [o for o in steady() if not 100.0 <= o.started < 101.0] + [outcome(100.2, 2.0, None)]
    assert chaos.verdict(loss(design.FAILOVER, 1.5), chaos.observe(within, LOST_AT, 1.5))[0]
    late = [*within, outcome(102.0, 0.1, 503)]
    ok, why = chaos.verdict(loss(design.FAILOVER, 1.5), chaos.observe(late, LOST_AT, 1.5))
    assert not ok and "after the failover gap" in why
    # Back at 106 s, it takes the VIP back: a request under way on the other load balancer may fail then.
    handback = [*within, outcome(106.3, 0.2, None)]
    assert chaos.verdict(loss(design.FAILOVER, 1.5), chaos.observe(handback, LOST_AT, 1.5, returned_at=106.0))[0]
    too_long = [o for o in steady() if not 100.0 <= o.started < 102.0]
    ok, why = chaos.verdict(loss(design.FAILOVER, 1.5), chaos.observe(too_long, LOST_AT, 1.5))
    assert not ok and "more than the stated 1.5 s" in why


@pytest.mark.parametrize("effect", [design.NOTHING, design.MONITORING_DOWN])
def test_a_redundant_host_may_lose_only_a_write_in_flight(effect: str) -> None:
    in_flight = [*steady(), outcome(99.99, 10.0, 504, write=True)]
    ok, why = chaos.verdict(loss(effect), chaos.observe(in_flight, LOST_AT, 0))
    assert ok and "in flight" in why
    read = [*steady(), outcome(99.99, 10.0, 504)]
    assert not chaos.verdict(loss(effect), chaos.observe(read, LOST_AT, 0))[0]
    later_write = [*steady(), outcome(100.5, 1.0, 504, write=True)]
    ok, why = chaos.verdict(loss(effect), chaos.observe(later_write, LOST_AT, 0))
    assert not ok and "started after the loss" in why


def test_the_table_names_expected_observed_and_verdict() -> None:
    record = {"host": "web-02", "mode": "killed", "effect": "nothing", "expected": "0 failed requests",
              "observed": "reads 0/10 failed", "back_after_s": 4.2, "ok": False, "why": "1 read(s) failed"}
    row = chaos.table([record]).splitlines()[2]
    assert row == ("| web-02 | killed | nothing: 0 failed requests | reads 0/10 failed | 4.2 s | "
                   "WRONG: 1 read(s) failed |")
