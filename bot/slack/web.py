"""The Slack Web API client: one base URL for every call, retries for rate limits and outages."""

from __future__ import annotations

import logging

from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

DEFAULT_API_URL = "https://slack.com/api/"

log = logging.getLogger(__name__)


def normalize_api_url(url: str | None) -> str:
    url = (url or DEFAULT_API_URL).strip()
    return url if url.endswith("/") else url + "/"


def retry_handlers() -> list:
    return [
        ConnectionErrorRetryHandler(max_retry_count=2),
        RateLimitErrorRetryHandler(max_retry_count=5),
        ServerErrorRetryHandler(max_retry_count=3),
    ]


def make_web_client(token: str | None, api_url: str | None) -> WebClient:
    return WebClient(
        token=token,
        base_url=normalize_api_url(api_url),
        timeout=15,
        retry_handlers=retry_handlers(),
        logger=logging.getLogger("pgsessions.slack_sdk"),
    )
