"""The Slack Web API client: one base URL for every call, retries for rate limits and outages.

Every post says ``unfurl_links: false`` and ``unfurl_media: false`` (:class:`QuietWebClient`,
:class:`QuietRespond`): a URL in text from a database must never become a preview card.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from slack_bolt import App, BoltContext, BoltResponse
from slack_bolt.context.respond import Respond
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.web import SlackResponse
from slack_sdk.webhook import WebhookResponse

DEFAULT_API_URL = "https://slack.com/api/"

log = logging.getLogger(__name__)


def normalize_api_url(url: str | None) -> str:
    url = (url or DEFAULT_API_URL).strip()
    return url if url.endswith("/") else url + "/"


def retry_handlers() -> list[RetryHandler]:
    return [
        ConnectionErrorRetryHandler(max_retry_count=2),
        RateLimitErrorRetryHandler(max_retry_count=5),
        ServerErrorRetryHandler(max_retry_count=3),
    ]


# what every post carries (chat.update takes no unfurl arguments: an edit never unfurls anew)
NO_UNFURL: dict[str, bool] = {"unfurl_links": False, "unfurl_media": False}


def _quiet(kwargs: dict[str, Any]) -> dict[str, Any]:
    for key, value in NO_UNFURL.items():
        if kwargs.get(key) is None:
            kwargs[key] = value
    return kwargs


class QuietWebClient(WebClient):
    """A WebClient whose posts never unfurl a link or a media URL (unless a caller says otherwise)."""

    def chat_postMessage(self, **kwargs: Any) -> SlackResponse:
        return super().chat_postMessage(**_quiet(kwargs))

    def chat_postEphemeral(self, **kwargs: Any) -> SlackResponse:
        return super().chat_postEphemeral(**_quiet(kwargs))


class QuietRespond(Respond):
    """Bolt's ``respond()`` (a post to the interaction's response_url) that never unfurls."""

    def __call__(self, *args: Any, **kwargs: Any) -> WebhookResponse:
        return super().__call__(*args, **_quiet(kwargs))


def quiet_copy(client: WebClient) -> QuietWebClient:
    """``client`` (Bolt makes a plain WebClient per request) as a :class:`QuietWebClient`, same settings."""
    return QuietWebClient(
        token=client.token, base_url=client.base_url, timeout=client.timeout, ssl=client.ssl, proxy=client.proxy,
        headers=client.headers, team_id=client.default_params.get("team_id"), logger=client.logger,
        retry_handlers=list(client.retry_handlers) if client.retry_handlers is not None else None,
    )


def install_quiet_respond(app: App) -> None:
    """A Bolt middleware: every listener's ``client`` is a :class:`QuietWebClient` and its ``respond`` a
    :class:`QuietRespond` (Bolt sets plain ones on every request's context before any middleware runs)."""

    def quiet_respond(context: BoltContext, next: Callable[[], BoltResponse]) -> BoltResponse:  # Bolt passes them by these names
        client = context.get("client")
        if isinstance(client, WebClient) and not isinstance(client, QuietWebClient):
            context["client"] = quiet_copy(client)
        if context.response_url and not isinstance(context.get("respond"), QuietRespond):  # Bolt's own is set
            context["respond"] = QuietRespond(response_url=context.response_url, proxy=context.client.proxy,
                                              ssl=context.client.ssl)
        return next()

    app.middleware(quiet_respond)


def make_web_client(token: str | None, api_url: str | None) -> WebClient:
    return QuietWebClient(
        token=token,
        base_url=normalize_api_url(api_url),
        timeout=15,
        retry_handlers=retry_handlers(),
        logger=logging.getLogger("pgsessions.slack_sdk"),
    )
