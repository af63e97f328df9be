"""What an answer means: success, retryable or permanent; Retry-After; backoff with full jitter."""

from __future__ import annotations

from agent.sender import backoff_delay, classify, parse_retry_after


def test_classification_and_backoff() -> None:
    assert classify(200, {"request_id": "r", "data": {"alert_key": "k"}}, {}).ok
    assert not classify(200, {"request_id": "r", "error": {"code": "InvalidParameter"}}, {}).retryable
    assert classify(429, {"error": {"code": "RequestTooFrequently"}}, {"Retry-After": "3"}).retry_after == 3
    assert classify(503, None, {}).retryable and classify(408, None, {}).retryable
    assert not classify(401, {"error": {"code": "Unauthorized"}}, {}).retryable
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("nonsense") is None
    assert all(0 <= backoff_delay(n, 1, 30) <= min(30, 2**n) for n in range(12))
