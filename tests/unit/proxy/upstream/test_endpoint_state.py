"""An endpoint's live counters and its peak-EWMA latency estimate."""

import math

import pytest

from mycelium.proxy.upstream.endpoint import EndpointState, PeakEwmaLatency, endpoint_key


def test_an_endpoint_is_named_address_colon_port_with_ipv6_in_brackets() -> None:
    assert EndpointState(address="198.18.0.5", port=9080).key == "198.18.0.5:9080"
    assert endpoint_key("fd00::5", 9080) == "[fd00::5]:9080"
    assert EndpointState(address="198.18.0.5", port=9080, key="custom").key == "custom"


def test_requests_in_flight_rise_and_fall_with_each_attempt() -> None:
    ep = EndpointState(address="198.18.0.5", port=9080)
    ep.request_started(1.0)
    ep.request_started(1.1)
    assert ep.in_flight == 2
    assert ep.last_started_at == 1.1
    ep.request_finished(1.2, 0.1, ok=True)
    ep.request_finished(1.3, 0.2, ok=False)
    assert (ep.in_flight, ep.requests_total, ep.failures_total) == (0, 2, 1)
    ep.request_finished(1.4, 0.1, ok=True)  # an unmatched finish never goes below zero
    assert ep.in_flight == 0


def test_changing_weight_or_health_bumps_the_epoch_and_an_equal_value_does_not() -> None:
    ep = EndpointState(address="198.18.0.5", port=9080, weight=2)
    before = EndpointState.epoch
    ep.weight = 2
    ep.healthy = True
    assert EndpointState.epoch == before
    ep.weight = 3
    assert EndpointState.epoch == before + 1
    ep.healthy = False
    assert EndpointState.epoch == before + 2


def test_a_weight_below_one_counts_as_one() -> None:
    ep = EndpointState(address="198.18.0.5", port=9080, weight=0)
    assert ep.weight == 1


def test_before_any_response_there_is_no_estimate() -> None:
    latency = PeakEwmaLatency(decay_seconds=10.0)
    assert (latency.observations, latency.estimate(5.0)) == (0, 0.0)
    latency.observe(6.0, 0.02)
    assert (latency.observations, latency.estimate(6.0)) == (1, 0.02)


def test_a_slower_response_raises_the_estimate_at_once() -> None:
    latency = PeakEwmaLatency()
    latency.observe(1.0, 0.010)
    latency.observe(1.001, 0.200)
    assert latency.estimate(1.001) == 0.200


def test_faster_responses_bring_a_peak_down_gradually() -> None:
    latency = PeakEwmaLatency(decay_seconds=10.0)
    latency.observe(0.0, 0.200)
    latency.observe(1.0, 0.010)  # one second later: weight exp(-0.1) on the old value
    w = math.exp(-0.1)
    assert latency.estimate(1.0) == pytest.approx(0.200 * w + 0.010 * (1 - w))
    assert latency.estimate(1.0) > 0.15


def test_without_responses_the_estimate_fades_with_the_decay_time() -> None:
    latency = PeakEwmaLatency(decay_seconds=10.0)
    latency.observe(0.0, 0.100)
    assert latency.estimate(10.0) == pytest.approx(0.100 / math.e)
    assert latency.estimate(50.0) < 0.001


def test_a_fast_failure_never_makes_an_endpoint_look_faster() -> None:
    ep = EndpointState(address="198.18.0.5", port=9080)
    ep.request_started(0.0)
    ep.request_finished(0.1, 0.100, ok=True)
    before = ep.latency.estimate(0.2)
    ep.request_started(0.2)
    ep.request_finished(0.2, 0.001, ok=False)
    assert ep.latency.estimate(0.2) >= before
