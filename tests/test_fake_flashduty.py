"""Tests of the fake Flashduty endpoint itself, driven by a plain aiohttp client."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fake_flashduty import PUSH_PATH, FakeFlashduty, validate_event

REPO = Path(__file__).resolve().parent.parent


def ev(**overrides: Any) -> dict[str, Any]:
    """A valid event body, with overrides (a value of ... removes the field)."""
    body: dict[str, Any] = {
        "title_rule": "disk full on web-1",
        "event_status": "Critical",
        "alert_key": "host:web-1:disk",
        "description": "/var is 99% full",
        "labels": {"host": "web-1", "check": "disk"},
    }
    for key, value in overrides.items():
        if value is ...:
            body.pop(key, None)
        else:
            body[key] = value
    return body


class FakeClock:
    """A manually advanced monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def fake() -> AsyncIterator[FakeFlashduty]:
    async with FakeFlashduty() as fd:
        yield fd


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def post(
    session: aiohttp.ClientSession, url: str, body: Any, **kwargs: Any
) -> tuple[int, dict[str, Any] | None, aiohttp.ClientResponse]:
    """POST a JSON body; return status, decoded JSON (None if not JSON) and the response."""
    async with session.post(url, json=body, **kwargs) as resp:
        text = await resp.text()
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        return resp.status, data, resp


# ------------------------------------------------------------------------------------------ success


async def test_success_shape(fake: FakeFlashduty, session: aiohttp.ClientSession) -> None:
    assert fake.url == f"http://127.0.0.1:{fake.port}{PUSH_PATH}?integration_key=test-key-0123456789abcdef"
    assert fake.base_url == f"http://127.0.0.1:{fake.port}"
    body = ev()
    before = time.time()
    status, data, resp = await post(session, fake.url, body)
    assert status == 200
    assert resp.content_type == "application/json"
    assert set(data) == {"request_id", "data"}
    assert re.fullmatch(r"[0-9a-f]{32}", data["request_id"])
    assert data["data"] == {"alert_key": "host:web-1:disk"}

    assert fake.events == [body]
    assert "_received_at" not in fake.events[0]
    assert len(fake.received_at) == 1 and before <= fake.received_at[0] <= time.time()
    assert fake.events_for("host:web-1:disk") == [body]
    assert fake.events_for("other") == []
    assert fake.statuses_for("host:web-1:disk") == ["Critical"]
    assert fake.violations == [] and fake.rate_limited == 0
    (req,) = fake.requests
    assert (req.method, req.path, req.status, req.fault) == ("POST", PUSH_PATH, 200, None)
    assert req.query == {"integration_key": "test-key-0123456789abcdef"}
    assert req.headers["content-type"].startswith("application/json")
    assert json.loads(req.body) == body and req.json() == body
    assert req.response == data and req.request_id == data["request_id"]
    assert req.accepted and req.error_code is None and req.completed_at is not None


async def test_generated_alert_key_and_extra_query_params(
    fake: FakeFlashduty, session: aiohttp.ClientSession
) -> None:
    status, data, _ = await post(session, fake.url + "&channel=ops", ev(alert_key=...))
    assert status == 200
    assert re.fullmatch(r"[0-9a-f]{32}", data["data"]["alert_key"])
    assert "alert_key" not in fake.events[0]


async def test_boundaries_accepted(fake: FakeFlashduty, session: aiohttp.ClientSession) -> None:
    body = ev(
        title_rule="é" * 512,  # characters, not bytes
        alert_key="k" * 255,
        description="🔥" * 2048,
        labels={f"l{i}": "v" for i in range(49)} | {"_" + "a" * 127: "x" * 2048},
        event_time=int(time.time()),
        images=[{"src": "https://example.com/a.png", "alt": "a" * 128, "href": "http://example.com/"}],
    )
    status, data, _ = await post(session, fake.url, body)
    assert status == 200, data
    for event_status in ("Warning", "Info", "Ok"):
        status, data, _ = await post(session, fake.url, ev(event_status=event_status))
        assert status == 200, data
    status, _, _ = await post(
        session, fake.url, ev(), headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert status == 200
    assert fake.accepted_count == 5 and fake.violations == []


# ---------------------------------------------------------------------------------- protocol errors


async def test_unknown_route_and_wrong_method(fake: FakeFlashduty, session: aiohttp.ClientSession) -> None:
    status, data, _ = await post(session, fake.base_url + "/event/push/alert/prometheus", ev())
    assert status == 404 and data["error"]["code"] == "RouteNotFound"
    assert data["request_id"]
    async with session.get(fake.url) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "MethodNotAllowed"
    async with session.put(fake.url, json=ev()) as resp:
        assert resp.status == 400
    assert len(fake.violations) == 3 and fake.events == []


async def test_content_type_required(fake: FakeFlashduty, session: aiohttp.ClientSession) -> None:
    raw = json.dumps(ev()).encode()
    for headers in ({"Content-Type": "text/plain"}, {}):
        async with session.post(fake.url, data=raw, headers=headers) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["code"] == "InvalidContentType"
    assert len(fake.violations) == 2 and fake.events == []


async def test_wrong_or_missing_key(fake: FakeFlashduty, session: aiohttp.ClientSession) -> None:
    for url in (
        fake.url.replace("test-key", "bad-key"),
        fake.base_url + PUSH_PATH,
        fake.base_url + PUSH_PATH + "?integration_key=",
    ):
        status, data, _ = await post(session, url, ev())
        assert status == 400
        assert data["error"] == {"code": "InvalidParameter", "message": "integration_key is not a valid one"}
    # a wrong key is a configuration problem, not a protocol violation
    assert fake.violations == [] and fake.events == []
    # the key twice in the query is a client bug
    status, data, _ = await post(session, fake.url + "&integration_key=x", ev())
    assert status == 400 and len(fake.violations) == 1


async def test_reject_key_and_set_key(fake: FakeFlashduty, session: aiohttp.ClientSession) -> None:
    fake.reject_key()
    status, data, _ = await post(session, fake.url, ev())
    assert status == 400 and data["error"]["message"] == "integration_key is not a valid one"
    old_url = fake.url
    fake.set_key("rotated-key")
    assert "integration_key=rotated-key" in fake.url
    assert (await post(session, old_url, ev()))[0] == 400
    assert (await post(session, fake.url, ev()))[0] == 200
    fake.reject_key()
    fake.clear_faults()
    assert (await post(session, fake.url, ev()))[0] == 200


LONG = "x" * 3000

INVALID_BODIES: list[tuple[str, Any, str]] = [
    ("array", [ev()], "JSON object"),
    ("string", "hello", "JSON object"),
    ("no title", ev(title_rule=...), "title_rule is required"),
    ("empty title", ev(title_rule=""), "title_rule must not be empty"),
    ("blank title", ev(title_rule="   "), "title_rule must not be empty"),
    ("title not str", ev(title_rule=5), "title_rule must be a string"),
    ("title 513", ev(title_rule="t" * 513), "title_rule is 513 characters, limit is 512"),
    ("no status", ev(event_status=...), "event_status is required"),
    ("lowercase status", ev(event_status="ok"), "event_status must be one of"),
    ("upper status", ev(event_status="CRITICAL"), "event_status must be one of"),
    ("status Error", ev(event_status="Error"), "event_status must be one of"),
    ("Ok without key", ev(event_status="Ok", alert_key=...), "alert_key is required when event_status is Ok"),
    ("empty alert_key", ev(event_status="Ok", alert_key=""), "alert_key must not be empty"),
    ("alert_key 256", ev(alert_key="k" * 256), "alert_key is 256 characters, limit is 255"),
    ("alert_key int", ev(alert_key=7), "alert_key must be a string"),
    ("description 2049", ev(description="d" * 2049), "description is 2049 characters, limit is 2048"),
    ("description null", ev(description=None), "description must be a string"),
    ("labels list", ev(labels=["a"]), "labels must be an object"),
    ("51 labels", ev(labels={f"l{i}": "v" for i in range(51)}), "labels has 51 entries, limit is 50"),
    ("label key dash", ev(labels={"a-b": "v"}), "does not match"),
    ("label key digit", ev(labels={"1a": "v"}), "does not match"),
    ("label key empty", ev(labels={"": "v"}), "does not match"),
    ("label key unicode", ev(labels={"é": "v"}), "does not match"),
    ("label key 129", ev(labels={"k" * 129: "v"}), "129 characters, limit is 128"),
    ("label value 2049", ev(labels={"k": "v" * 2049}), "2049 characters, limit is 2048"),
    ("label value int", ev(labels={"k": 1}), "must be a string, got int"),
    ("label value null", ev(labels={"k": None}), "must be a string, got NoneType"),
    ("unknown field", ev(severity="high"), "unknown fields: severity"),
    ("event_time str", ev(event_time="1700000000"), "event_time must be an integer"),
    ("event_time float", ev(event_time=1700000000.5), "event_time must be an integer"),
    ("event_time bool", ev(event_time=True), "event_time must be an integer"),
    ("event_time ms", ev(event_time=1700000000000), "milliseconds"),
    ("images object", ev(images={"src": "http://x/"}), "images must be an array"),
    ("image no src", ev(images=[{"alt": "a"}]), "images[0].src is required"),
    ("image ftp", ev(images=[{"src": "ftp://x/a.png"}]), "http or https URL"),
    ("image src 257", ev(images=[{"src": "https://x/" + "a" * 247}]), "257 characters, limit is 256"),
    ("image alt 129", ev(images=[{"src": "https://x/", "alt": "a" * 129}]), "limit is 128"),
    ("image extra", ev(images=[{"src": "https://x/", "title": "t"}]), "unknown fields: title"),
]


@pytest.mark.parametrize(
    ("body", "expected"), [(b, e) for _, b, e in INVALID_BODIES], ids=[i for i, *_ in INVALID_BODIES]
)
async def test_invalid_body(
    fake: FakeFlashduty, session: aiohttp.ClientSession, body: Any, expected: str
) -> None:
    status, data, _ = await post(session, fake.url, body)
    assert status == 400
    assert data["error"]["code"] == "InvalidParameter"
    assert expected in data["error"]["message"]
    assert fake.violations and all(v.startswith("request #0: ") for v in fake.violations)
    assert any(expected in v for v in fake.violations)
    assert fake.events == [] and fake.accepted_count == 0
    assert validate_event(body)  # the pure validator agrees


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b'{"title_rule": NaN, "event_status": "Info"}', b"\xff\xfe", b'{"a": 1, "a": 2}'],
    ids=["syntax", "nan", "not utf8", "duplicate key"],
)
async def test_undecodable_body(fake: FakeFlashduty, session: aiohttp.ClientSession, raw: bytes) -> None:
    async with session.post(fake.url, data=raw, headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "InvalidParameter"
    assert len(fake.violations) == 1 and "not valid JSON" in fake.violations[0]


def test_validate_event_collects_all_problems() -> None:
    problems = validate_event({"title_rule": "", "event_status": "Ok", "x": 1})
    assert problems == [
        "unknown fields: x",
        "title_rule must not be empty",
        "alert_key is required when event_status is Ok",
    ]
    assert validate_event(ev()) == []


# ------------------------------------------------------------------------------------- rate limits


async def test_rate_limit_kicks_in_at_101_per_second(
    fake: FakeFlashduty, session: aiohttp.ClientSession
) -> None:
    results = await asyncio.gather(*(post(session, fake.url, ev(alert_key=f"k{i}")) for i in range(101)))
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200] * 100 + [429]
    (limited,) = [data for status, data, _ in results if status == 429]
    assert limited["error"]["code"] == "RequestTooFrequently"
    assert fake.rate_limited == 1 and fake.accepted_count == 100
    assert fake.violations == []


async def test_rate_limit_windows_slide(session: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    async with FakeFlashduty(per_second=2, per_minute=3, clock=clock, rate_limit_retry_after=1) as fd:
        assert [(await post(session, fd.url, ev()))[0] for _ in range(3)] == [200, 200, 429]
        status, _, resp = await post(session, fd.url, ev())
        assert status == 429 and resp.headers["Retry-After"] == "1"
        clock.now += 1.0  # the second window slid; one request left in the minute window
        assert [(await post(session, fd.url, ev()))[0] for _ in range(2)] == [200, 429]
        clock.now += 59.0  # the first two fell out of the minute window
        assert [(await post(session, fd.url, ev()))[0] for _ in range(3)] == [200, 200, 429]
        assert fd.rate_limited == 4 and fd.accepted_count == 5
        # other keys have their own windows
        fd.set_key("other")
        assert (await post(session, fd.url, ev()))[0] == 200


async def test_rate_limit_disabled(session: aiohttp.ClientSession) -> None:
    async with FakeFlashduty(per_second=None, per_minute=None) as fd:
        results = await asyncio.gather(*(post(session, fd.url, ev()) for _ in range(150)))
        assert {status for status, _, _ in results} == {200}


# ------------------------------------------------------------------------------------------ faults


async def test_fail_next(fake: FakeFlashduty, session: aiohttp.ClientSession) -> None:
    fake.fail_next(2, status=503, code="InternalError", retry_after=2)
    for _ in range(2):
        status, data, resp = await post(session, fake.url, ev())
        assert status == 503 and data["error"]["code"] == "InternalError" and data["request_id"]
        assert resp.headers["Retry-After"] == "2"
    status, _, resp = await post(session, fake.url, ev())
    assert status == 200 and "Retry-After" not in resp.headers
    assert [r.fault for r in fake.requests] == ["fail_next(503)", "fail_next(503)", None]
    assert len(fake.events) == 1 and fake.violations == []


async def test_fail_next_variants(fake: FakeFlashduty, session: aiohttp.ClientSession) -> None:
    fake.fail_next(1, status=429, code="RequestTooFrequently", retry_after=0.5)
    fake.fail_next(
        1, status=502, body="<html>Bad Gateway</html>", retry_after="Wed, 21 Oct 2015 07:28:00 GMT"
    )
    fake.fail_next(1, status=401, code="Unauthorized", message="nope")
    status, data, resp = await post(session, fake.url, ev())
    assert (status, data["error"]["code"], resp.headers["Retry-After"]) == (
        429,
        "RequestTooFrequently",
        "0.5",
    )
    status, data, resp = await post(session, fake.url, ev())
    assert status == 502 and data is None and resp.content_type == "text/html"
    assert resp.headers["Retry-After"] == "Wed, 21 Oct 2015 07:28:00 GMT"
    assert fake.requests[1].response is None
    status, data, _ = await post(session, fake.url, ev())
    assert status == 401 and data["error"] == {"code": "Unauthorized", "message": "nope"}
    assert fake.rate_limited == 0  # injected 429s are not the rate limiter
    assert (await post(session, fake.url, ev()))[0] == 200


async def test_fail_for_outage(session: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    async with FakeFlashduty(clock=clock) as fd:
        fd.fail_for(5.0, status=500, retry_after=3)
        assert "fail_for(500)" in fd.pending_faults()
        for _ in range(3):
            status, data, resp = await post(session, fd.url, ev())
            assert status == 500 and data["error"]["code"] == "InternalError"
            assert resp.headers["Retry-After"] == "3"
        clock.now += 5.0
        assert (await post(session, fd.url, ev()))[0] == 200
        assert [r.fault for r in fd.requests] == ["fail_for(500)"] * 3 + [None]
        assert fd.pending_faults() == ""


async def test_reset_next(fake: FakeFlashduty, session: aiohttp.ClientSession) -> None:
    fake.reset_next(2)
    for _ in range(2):
        with pytest.raises(aiohttp.ClientConnectionError):
            await post(session, fake.url, ev())
    assert (await post(session, fake.url, ev()))[0] == 200
    assert [(r.status, r.fault) for r in fake.requests] == [(None, "reset"), (None, "reset"), (200, None)]
    assert all(r.body for r in fake.requests)  # the body was read before the reset
    assert len(fake.events) == 1
    assert "connection reset" in fake.describe()


async def test_delay_next_client_timeout_is_at_least_once(
    fake: FakeFlashduty, session: aiohttp.ClientSession
) -> None:
    fake.delay_next(1, 0.4)
    started = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        await post(session, fake.url, ev(), timeout=aiohttp.ClientTimeout(total=0.1))
    assert time.monotonic() - started < 0.35
    assert fake.events == []  # still held
    # the server still processes the request after the client gave up, like a real one
    await fake.wait_for_events(1, timeout=5)
    (req,) = fake.requests
    assert req.status == 200 and req.fault == "delay(0.4s)" and req.client_disconnected


async def test_delay_then_answer(fake: FakeFlashduty, session: aiohttp.ClientSession) -> None:
    fake.delay_next(1, 0.2)
    started = time.monotonic()
    status, _, _ = await post(session, fake.url, ev())
    assert status == 200 and time.monotonic() - started >= 0.2
    assert not fake.requests[0].client_disconnected


async def test_faults_compose_in_order(fake: FakeFlashduty, session: aiohttp.ClientSession) -> None:
    fake.delay_next(1, 0.05)  # modifier: stacks with the next queued fault
    fake.fail_next(1, status=503)
    fake.reset_next(1)
    fake.error_body_next(1)
    assert fake.pending_faults() == "delay(0.05s) x1, fail_next(503) x1, reset x1, error_body x1"
    assert (await post(session, fake.url, ev()))[0] == 503
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(session, fake.url, ev())
    status, data, _ = await post(session, fake.url, ev())
    assert status == 200 and "error" in data and "data" not in data
    assert (await post(session, fake.url, ev()))[0] == 200
    assert [r.fault for r in fake.requests] == ["delay(0.05s)+fail_next(503)", "reset", "error_body", None]
    assert len(fake.events) == 1


async def test_error_body_next(fake: FakeFlashduty, session: aiohttp.ClientSession) -> None:
    fake.error_body_next(1, code="InternalError", message="db unavailable")
    status, data, _ = await post(session, fake.url, ev())
    assert status == 200
    assert data["error"] == {"code": "InternalError", "message": "db unavailable"} and data["request_id"]
    assert fake.events == [] and not fake.requests[0].accepted


async def test_clear_faults(fake: FakeFlashduty, session: aiohttp.ClientSession) -> None:
    fake.fail_next(5)
    fake.reset_next(1)
    fake.delay_next(3, 5.0)
    fake.fail_for(60)
    fake.reject_key()
    fake.clear_faults()
    assert fake.pending_faults() == ""
    assert (await post(session, fake.url, ev()))[0] == 200


# ---------------------------------------------------------------------------------------- waiting


async def test_wait_for_events(fake: FakeFlashduty, session: aiohttp.ClientSession) -> None:
    async def later() -> None:
        await asyncio.sleep(0.05)
        await post(session, fake.url, ev(alert_key="a"))
        await post(session, fake.url, ev(alert_key="b"))

    task = asyncio.create_task(later())
    events = await fake.wait_for_events(2, timeout=5)
    assert [e["alert_key"] for e in events] == ["a", "b"]
    await task
    await fake.wait_until(lambda: len(fake.requests) == 2, timeout=1)


async def test_wait_for_events_timeout_message(fake: FakeFlashduty, session: aiohttp.ClientSession) -> None:
    fake.fail_next(1, status=503)
    await post(session, fake.url, ev(alert_key="first"))
    await post(session, fake.url, ev(labels={"bad-key": "v"}))
    await post(session, fake.url, ev(alert_key="ok-one"))
    fake.reset_next(3)
    started = time.monotonic()
    with pytest.raises(AssertionError) as info:
        await fake.wait_for_events(2, timeout=0.2)
    assert 0.2 <= time.monotonic() - started < 1.0
    message = str(info.value)
    assert "expected at least 2 accepted events within 0.2s, got 1" in message
    assert "requests: 3 (200: 1, 400 InvalidParameter: 1, 503 InternalError: 1)" in message
    assert "violations: 1" in message and "does not match" in message
    assert "pending faults: reset x3" in message
    assert "[fail_next(503)]" in message and "alert_key='first'" in message
    assert "test-key" not in message  # the summary does not leak the key


async def test_wait_until_timeout(fake: FakeFlashduty) -> None:
    def never() -> bool:
        return False

    with pytest.raises(AssertionError, match=r"condition .*never not met within 0.1s"):
        await fake.wait_until(never, timeout=0.1)


# -------------------------------------------------------------------------------------- lifecycle


async def test_stop_and_restart_keeps_port(session: aiohttp.ClientSession) -> None:
    fd = FakeFlashduty()
    await fd.start()
    try:
        url = fd.url
        assert (await post(session, url, ev()))[0] == 200
        await fd.stop()
        assert not fd.running
        with pytest.raises(aiohttp.ClientConnectionError):
            await post(session, url, ev())
        await fd.start()
        assert fd.url == url
        assert (await post(session, url, ev()))[0] == 200
        assert len(fd.events) == 2
    finally:
        await fd.stop()
        await fd.stop()  # idempotent


async def test_stop_cuts_off_delayed_requests(session: aiohttp.ClientSession) -> None:
    fd = FakeFlashduty()
    await fd.start()
    fd.delay_next(1, 30.0)
    request = asyncio.create_task(post(session, fd.url, ev()))
    await fd.wait_until(lambda: len(fd.requests) == 1, timeout=5)
    started = time.monotonic()
    await fd.stop()
    assert time.monotonic() - started < 2.0
    with pytest.raises(aiohttp.ClientConnectionError):
        await request
    assert fd.requests[0].fault == "delay(30s)+stopped" and fd.events == []


async def test_fixed_port(session: aiohttp.ClientSession) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with FakeFlashduty(port=port, integration_key="k/1 2") as fd:
        assert fd.port == port
        assert fd.url.endswith("?integration_key=k%2F1%202")
        assert (await post(session, fd.url, ev()))[0] == 200


async def test_history_off_keeps_counters(session: aiohttp.ClientSession) -> None:
    seen: list[dict[str, Any]] = []
    async with FakeFlashduty(history=False, on_event=seen.append) as fd:
        assert (await post(session, fd.url, ev()))[0] == 200
        assert (await post(session, fd.url, ev(title_rule="")))[0] == 400
        assert fd.events == [] and fd.requests == []
        assert (fd.request_count, fd.accepted_count, len(fd.violations)) == (2, 1, 1)
        assert await fd.wait_for_events(1, timeout=1) == []
    (record,) = seen
    assert set(record) == {"received_at", "request_id", "alert_key", "event"}
    assert record["alert_key"] == "host:web-1:disk" and record["event"] == ev()


async def test_standalone_process(session: aiohttp.ClientSession) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.fake_flashduty", "--port", "0", "--key", "cli-key",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stderr is not None and proc.stdout is not None
        line = (await asyncio.wait_for(proc.stderr.readline(), 10)).decode()
        match = re.search(r"listening on (\S+)", line)
        assert match, line
        url = match.group(1)
        assert url.endswith("?integration_key=cli-key")
        assert (await post(session, url, ev()))[0] == 200
        assert (await post(session, url.replace("cli-key", "wrong"), ev()))[0] == 400
        printed = json.loads(await asyncio.wait_for(proc.stdout.readline(), 10))
        assert printed["event"] == ev() and printed["alert_key"] == "host:web-1:disk"
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
    assert proc.returncode == 0
    summary = (await proc.stderr.read()).decode()
    assert "2 requests, 1 accepted" in summary
