"""Outlier detection: runs of failures eject an endpoint for a growing while; never
more than the allowed share of the cluster is out at once."""

import pytest

from mycelium.errors import ConfigError
from mycelium.proxy.upstream.endpoint import EndpointState
from mycelium.proxy.upstream.outlier import OutlierDetector


def endpoints(count: int) -> list[EndpointState]:
    return [EndpointState(address=f"198.18.0.{i + 1}", port=9080) for i in range(count)]


def detector(**overrides: float | None) -> OutlierDetector:
    settings: dict[str, float | None] = {
        "consecutive_5xx": 5,
        "consecutive_gateway_errors": None,
        "base_ejection_time": 30.0,
        "max_ejection_percent": 50.0,
    }
    settings.update(overrides)
    return OutlierDetector(**settings)  # type: ignore[arg-type]


def fail(od: OutlierDetector, ep: EndpointState, times: int, now: float, status: int = 500) -> bool:
    return [od.record(ep, status=status, now=now) for _ in range(times)][-1]


def test_five_5xx_in_a_row_eject_on_the_fifth() -> None:
    od, eps = detector(), endpoints(4)
    od.available(eps, 0.0)
    assert [od.record(eps[0], status=500, now=1.0) for _ in range(5)] == [False] * 4 + [True]
    assert od.is_ejected(eps[0], 1.0)
    assert eps[0] not in od.available(eps, 1.0)
    assert od.ejections_total == 1


def test_a_success_in_between_starts_the_run_again() -> None:
    od, eps = detector(), endpoints(4)
    fail(od, eps[0], 4, 1.0)
    od.record(eps[0], status=200, now=1.0)
    assert not fail(od, eps[0], 4, 1.0)
    assert fail(od, eps[0], 1, 1.0)


def test_local_failures_count_as_5xx() -> None:
    od, eps = detector(), endpoints(4)
    for failure in ("connect", "reset", "timeout", "connect"):
        assert not od.record(eps[0], failure=failure, now=1.0)
    assert od.record(eps[0], failure="timeout", now=1.0)


def test_gateway_errors_are_502_503_504_and_local_failures() -> None:
    od, eps = detector(consecutive_5xx=None, consecutive_gateway_errors=3), endpoints(4)
    od.record(eps[0], status=502, now=1.0)
    od.record(eps[0], status=503, now=1.0)
    od.record(eps[0], status=500, now=1.0)  # a 5xx, but not a gateway error: run restarts
    assert eps[0].consecutive_gateway_errors == 0
    od.record(eps[0], status=504, now=1.0)
    od.record(eps[0], failure="connect", now=1.0)
    assert od.record(eps[0], status=503, now=1.0)


def test_a_500_still_counts_towards_the_5xx_run() -> None:
    od, eps = detector(consecutive_5xx=3, consecutive_gateway_errors=3), endpoints(4)
    od.record(eps[0], status=502, now=1.0)
    od.record(eps[0], status=500, now=1.0)
    assert od.record(eps[0], status=503, now=1.0)  # third 5xx in a row


def test_an_ejection_ends_by_itself_and_grows_with_each_repeat() -> None:
    od, eps = detector(base_ejection_time=30.0, interval=1000.0), endpoints(4)
    od.available(eps, 0.0)
    fail(od, eps[0], 5, 0.0)
    assert od.is_ejected(eps[0], 29.9)
    assert not od.is_ejected(eps[0], 30.0)
    assert eps[0] in od.available(eps, 30.0)
    # Back, but failing again: the second ejection lasts twice as long.
    assert fail(od, eps[0], 5, 31.0)
    assert od.is_ejected(eps[0], 31.0 + 59.9)
    assert not od.is_ejected(eps[0], 31.0 + 60.0)
    assert eps[0].ejection_count == 2


def test_time_spent_healthy_earns_the_multiplier_back() -> None:
    od, eps = detector(base_ejection_time=30.0, interval=10.0), endpoints(4)
    fail(od, eps[0], 5, 0.0)
    od.available(eps, 30.0)
    fail(od, eps[0], 5, 30.0)  # second in a row: 60 s
    od.available(eps, 90.0)
    fail(od, eps[0], 5, 110.0)  # 20 s back in service = two intervals: 2 - 2 + 1
    assert eps[0].ejection_count == 1
    assert not od.is_ejected(eps[0], 140.0)


def test_an_ejection_is_capped_at_the_max_ejection_time() -> None:
    od = detector(base_ejection_time=30.0, max_ejection_time=45.0, interval=1000.0)
    eps = endpoints(4)
    fail(od, eps[0], 5, 0.0)
    od.available(eps, 30.0)
    fail(od, eps[0], 5, 30.0)
    assert not od.is_ejected(eps[0], 75.0)


def test_outcomes_that_arrive_while_ejected_are_ignored() -> None:
    od, eps = detector(), endpoints(4)
    fail(od, eps[0], 5, 0.0)
    assert not fail(od, eps[0], 10, 1.0)
    od.record(eps[0], status=200, now=2.0)
    assert eps[0].consecutive_5xx == 0
    assert od.is_ejected(eps[0], 2.0)


def test_never_more_than_the_allowed_share_is_ejected_at_once() -> None:
    od, eps = detector(max_ejection_percent=10.0), endpoints(20)
    od.available(eps, 0.0)
    ejected = [fail(od, ep, 5, 0.0) for ep in eps[:4]]
    assert ejected == [True, True, False, False]  # 10 % of 20
    assert od.ejections_refused == 2
    assert len(od.available(eps, 0.0)) == 18


def test_one_endpoint_may_always_be_ejected() -> None:
    od, eps = detector(max_ejection_percent=10.0), endpoints(3)
    od.available(eps, 0.0)
    assert fail(od, eps[0], 5, 0.0)  # 10 % of 3 rounds down to 0: one is allowed anyway
    assert not fail(od, eps[1], 5, 0.0)


def test_zero_percent_switches_ejection_off() -> None:
    od, eps = detector(max_ejection_percent=0.0), endpoints(3)
    assert not fail(od, eps[0], 50, 0.0)
    assert OutlierDetector.disabled().available(eps, 0.0) == eps


def test_an_outlier_refused_for_lack_of_room_goes_when_room_frees_up() -> None:
    od, eps = detector(max_ejection_percent=10.0), endpoints(10)
    od.available(eps, 0.0)
    assert fail(od, eps[0], 5, 0.0)
    assert not fail(od, eps[1], 5, 0.0)
    assert od.record(eps[1], status=500, now=30.0)  # eps[0] is back at 30 s; its run went on
    assert od.ejected_count == 1


def test_available_leaves_out_endpoints_the_registry_marks_unhealthy() -> None:
    od, eps = detector(), endpoints(3)
    eps[1].healthy = False
    assert od.available(eps, 0.0) == [eps[0], eps[2]]
    eps[1].healthy = True  # changed in place: noticed at once
    assert od.available(eps, 0.0) == eps


def test_available_returns_the_same_list_while_nothing_changes() -> None:
    od, eps = detector(), endpoints(3)
    first = od.available(eps, 0.0)
    assert od.available(eps, 5.0) is first
    fail(od, eps[2], 5, 6.0)
    second = od.available(eps, 6.0)
    assert second is not first
    assert second == eps[:2]
    assert od.available(eps, 36.0) == eps  # the ejection ended


def test_a_removed_endpoint_no_longer_holds_an_ejection_slot() -> None:
    od, eps = detector(max_ejection_percent=10.0), endpoints(10)
    od.available(eps, 0.0)
    fail(od, eps[0], 5, 0.0)
    od.available(eps[1:], 1.0)
    assert od.ejected_count == 0
    assert fail(od, eps[1], 5, 1.0)


def test_the_snapshot_shows_each_endpoints_ejection_state() -> None:
    od, eps = detector(), endpoints(2)
    fail(od, eps[0], 5, 10.0)
    od.record(eps[1], status=503, now=12.0)
    first, second = od.snapshot(eps, 20.0)
    assert first.key == eps[0].key
    assert first.ejected
    assert first.ejected_for_seconds == pytest.approx(20.0)
    assert first.ejection_count == 1
    assert not second.ejected
    assert (second.consecutive_5xx, second.ejected_for_seconds) == (1, 0.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("consecutive_5xx", 0),
        ("base_ejection_time", 0.0),
        ("max_ejection_percent", 120.0),
        ("interval", -1.0),
    ],
)
def test_nonsense_settings_are_refused_with_a_hint(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        detector(**{field: value})
