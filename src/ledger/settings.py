"""Configuration, read from the environment (and a `.env` file in the working directory)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated
from urllib.parse import unquote, urlsplit

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ledger.domain.vocabulary import CaptureMode

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """`10m`, `30s`, `2h`, `1d`, `500ms` (a bare number is seconds)."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (try 30s, 10m, 2h or 1d)")
    return timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2] or "s"])


Duration = Annotated[
    timedelta, BeforeValidator(lambda v: parse_duration(v) if isinstance(v, str) else v)
]

# The longest a checkout may hold stock: Stripe's longest checkout session.
LONGEST_STOCK_HOLD = timedelta(hours=24)


def _hold_or_off(value: object) -> object:
    if isinstance(value, str):
        return None if value.strip().lower() == "off" else parse_duration(value)
    return value


@dataclass(frozen=True)
class SmtpServer:
    """Where customer e-mail goes: `LEDGER_SMTP_URL`, parsed."""

    host: str
    port: int
    ssl: bool  # smtps://: TLS from the first byte (else STARTTLS when the server offers it)
    username: str | None = None
    password: str | None = None


def parse_smtp_url(url: str) -> SmtpServer:
    """`smtp://[user:password@]host[:port]` (port 25) or `smtps://...` (port 465); the user
    and password percent-encoded as in any URL."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("smtp", "smtps"):
        raise ValueError("LEDGER_SMTP_URL must start with smtp:// or smtps://")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("LEDGER_SMTP_URL has a port that is not a number") from None
    if not parts.hostname:
        raise ValueError("LEDGER_SMTP_URL names no host")
    return SmtpServer(
        host=parts.hostname,
        port=port or (465 if scheme == "smtps" else 25),
        ssl=scheme == "smtps",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


class Settings(BaseSettings):
    """Every knob the ledger reads. Names are the contract's environment variables."""

    # An empty variable counts as unset, as `STRIPE_API_KEY=` in a compose file means.
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        populate_by_name=True,
    )

    database_url: str | None = Field(default=None, alias="LEDGER_DATABASE_URL")
    data_dir: Path = Field(default=Path(".ledger"), alias="LEDGER_DATA_DIR")
    stripe_api_key: SecretStr | None = Field(default=None, alias="STRIPE_API_KEY")
    stripe_webhook_secret: SecretStr | None = Field(default=None, alias="STRIPE_WEBHOOK_SECRET")
    stripe_api_base: str | None = Field(default=None, alias="STRIPE_API_BASE")
    public_url: str | None = Field(default=None, alias="LEDGER_PUBLIC_URL")
    admin_token: SecretStr | None = Field(default=None, alias="LEDGER_ADMIN_TOKEN")
    auditor_token: SecretStr | None = Field(default=None, alias="LEDGER_AUDITOR_TOKEN")
    # The storefront's own server (customer order lists); comma-separated. Unset: 401.
    storefront_token: SecretStr | None = Field(default=None, alias="LEDGER_STOREFRONT_TOKEN")
    # Unset: /metrics answers anyone (keep it off the public network).
    metrics_token: SecretStr | None = Field(default=None, alias="LEDGER_METRICS_TOKEN")
    # Seconds the success page keeps polling before it gives up (the contract's ceiling is 30).
    success_page_timeout: float = Field(
        default=30.0, gt=0, le=30, alias="LEDGER_SUCCESS_PAGE_TIMEOUT"
    )

    # The workers' resync: how often it runs (seconds), and how long a session, refund or
    # dispute must have waited for news from Stripe before it is asked for.
    resync_interval: float = Field(default=300.0, gt=0, alias="LEDGER_RESYNC_INTERVAL")
    resync_after: Duration = Field(default=timedelta(minutes=10), alias="LEDGER_RESYNC_AFTER")

    # How long a checkout holds its cart's stock; None (`off`): nothing is held before payment.
    stock_hold: Annotated[timedelta | None, BeforeValidator(_hold_or_off)] = Field(
        default=None, alias="LEDGER_STOCK_HOLD"
    )
    capture: CaptureMode = Field(default=CaptureMode.AUTOMATIC, alias="LEDGER_CAPTURE")

    # Customer e-mail. Unset URL: each e-mail is written to the log instead of sent.
    smtp_url: SecretStr | None = Field(default=None, alias="LEDGER_SMTP_URL")
    mail_from: str = Field(default="orders@localhost", alias="LEDGER_MAIL_FROM")

    @field_validator("stock_hold")
    @classmethod
    def _hold_within_a_day(cls, hold: timedelta | None) -> timedelta | None:
        if hold is not None and not timedelta(0) < hold <= LONGEST_STOCK_HOLD:
            raise ValueError("LEDGER_STOCK_HOLD must be more than 0 and at most 24h, or off")
        return hold

    @model_validator(mode="after")
    def _stripe_key_needs_a_webhook_secret(self) -> Settings:
        if self.stripe_api_key and not self.webhook_secrets:
            raise ValueError("STRIPE_API_KEY is set but STRIPE_WEBHOOK_SECRET is not")
        return self

    @model_validator(mode="after")
    def _smtp_url_is_valid(self) -> Settings:
        self.smtp_server  # noqa: B018 - raises ValueError for a malformed URL
        return self

    @property
    def smtp_server(self) -> SmtpServer | None:
        if self.smtp_url is None:
            return None
        return parse_smtp_url(self.smtp_url.get_secret_value())

    @property
    def webhook_secrets(self) -> list[str]:
        raw = self.stripe_webhook_secret.get_secret_value() if self.stripe_webhook_secret else ""
        return _split(raw)

    @property
    def auditor_tokens(self) -> list[str]:
        raw = self.auditor_token.get_secret_value() if self.auditor_token else ""
        return _split(raw)

    @property
    def storefront_tokens(self) -> list[str]:
        raw = self.storefront_token.get_secret_value() if self.storefront_token else ""
        return _split(raw)
