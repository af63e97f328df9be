"""One Flashduty integration's settings, where to POST, and how the integration key stays out of sight."""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from agent.model import Meta, Model
from agent.units import Duration

DEFAULT_BASE_URL = "https://api.flashcat.cloud/event/push/alert/standard"


class OutputConfig(Model):
    """One Flashduty integration (`flashduty:` or one item of a list of them)."""

    name: str = "default"
    push_url: str = ""  # whole URL from the integration card; empty (and no key) -> dry run
    push_url_file: str | None = None  # file holding the push URL (readable only by the service user)
    integration_key: str = ""  # alternative to push_url: key plus base_url
    base_url: str = DEFAULT_BASE_URL
    max_per_second: Annotated[int, Meta(ge=1)] = 100
    max_per_minute: Annotated[int, Meta(ge=1)] = 1000
    concurrency: Annotated[int, Meta(ge=1, le=64)] = 4
    timeout: Duration = 10.0
    retry_initial: Duration = 1.0
    retry_max: Duration = 60.0
    proxy: str | None = None
    ca_file: str | None = None
    verify_tls: bool = True

    def __post_init__(self) -> None:
        given = [bool(self.push_url), bool(self.push_url_file), bool(self.integration_key)]
        if sum(given) > 1:
            raise ValueError("set only one of push_url, push_url_file, integration_key")
        if self.push_url:
            parts = urlsplit(self.push_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("push_url must be an http(s) URL copied from the integration card")

    def resolved_url(self) -> str:
        """The URL to POST to, or "" for dry run. Reads push_url_file on each call (reload picks up rotation)."""
        if self.push_url_file:
            return Path(self.push_url_file).read_text(encoding="utf-8").strip()
        if self.integration_key:
            parts = urlsplit(self.base_url)
            query = [(k, v) for k, v in parse_qsl(parts.query) if k != "integration_key"]
            query.append(("integration_key", self.integration_key))
            return urlunsplit(parts._replace(query=urlencode(query)))
        return self.push_url

    def secrets(self) -> list[str]:
        found = [self.integration_key] if self.integration_key else []
        with contextlib.suppress(OSError):
            url = self.resolved_url()
            found.extend(v for k, v in parse_qsl(urlsplit(url).query) if k == "integration_key")
        return [s for s in found if s]

    def dry_run(self) -> bool:
        return not (self.push_url or self.push_url_file or self.integration_key)

    def tls(self) -> ssl.SSLContext | bool:
        """What aiohttp's ``ssl=`` gets: verification on by default, a private CA bundle, or off."""
        if not self.verify_tls:
            return False
        if self.ca_file:
            return ssl.create_default_context(cafile=self.ca_file)
        return True


def resolve_proxy(url: str, configured: str | None) -> str | None:
    """The proxy for ``url``: the `proxy:` setting, else HTTPS_PROXY/HTTP_PROXY unless NO_PROXY matches."""
    if configured:
        return configured
    if not url:
        return None
    import urllib.request  # once, as the first event is sent (a dry run never asks): ~0.5 MiB of RSS with http.client

    host = urlsplit(url).hostname or ""
    if urllib.request.proxy_bypass_environment(host):
        return None
    return urllib.request.getproxies_environment().get(urlsplit(url).scheme)
