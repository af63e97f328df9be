"""Delivery to Flashduty's Standard Alert endpoint: pacing, retries, backoff, dead letters, dry-run printing.

The agent needs ``OutputConfig`` (one integration's settings, validated in the root config) and
``OutputSender`` (one delivery worker per output, reading the outbox's queue); ``send_once`` is the one-off
POST of ``dutytail send-test``. ``classify`` and friends say what an answer means, per the protocol notes.
"""

from agent.sender.config import DEFAULT_BASE_URL, OutputConfig, resolve_proxy
from agent.sender.limiter import SlidingWindowLimiter
from agent.sender.once import send_once
from agent.sender.outcome import SendOutcome, backoff_delay, classify, parse_retry_after
from agent.sender.sender import OutputSender, OutputStats
from agent.sender.share import FleetShare

__all__ = [
    "DEFAULT_BASE_URL",
    "FleetShare",
    "OutputConfig",
    "OutputSender",
    "OutputStats",
    "SendOutcome",
    "SlidingWindowLimiter",
    "backoff_delay",
    "classify",
    "parse_retry_after",
    "resolve_proxy",
    "send_once",
]
