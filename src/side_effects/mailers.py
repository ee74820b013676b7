"""How an e-mail leaves: through an SMTP server (`LEDGER_SMTP_URL`), or into the log when
none is configured. A recipient refused for good is told apart from a failure worth retrying."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from typing import Protocol

import structlog

from ledger.settings import Settings, SmtpServer

# Every log line's `logger` field: kept across the move out of ledger, for searches on it.
log = structlog.get_logger("ledger.notifications")

# Seconds to connect, and to wait for each answer, per attempt: a server that stalls (on one
# recipient, say) fails that attempt within seconds, to be retried on its own schedule, instead
# of holding a place of the notifications worker for long (see `side_effects.attempts`).
SMTP_TIMEOUT_SECONDS = 5.0


class RecipientRefused(Exception):
    """The mail server refused the recipient for good (5xx): sending again will not help."""

    def __init__(self, code: int, response: str) -> None:
        super().__init__(f"{code} {response}")
        self.code = code
        self.response = response


class Mailer(Protocol):
    """Sends one e-mail. Raises RecipientRefused when the recipient is refused for good, and
    any other exception for a failure worth trying again."""

    def send(self, message: EmailMessage) -> str:
        """Sends it; returns the metric's outcome (`sent`, or `logged`)."""
        ...


class SmtpMailer:
    """Through an SMTP server: `smtps://` is TLS from the start; `smtp://` upgrades with
    STARTTLS when the server offers it; logs in when the URL names a user."""

    def __init__(self, server: SmtpServer, timeout: float = SMTP_TIMEOUT_SECONDS) -> None:
        self.server = server
        self.timeout = timeout

    def send(self, message: EmailMessage) -> str:
        server = self.server
        smtp: smtplib.SMTP
        if server.ssl:
            context = ssl.create_default_context()
            smtp = smtplib.SMTP_SSL(server.host, server.port, timeout=self.timeout, context=context)
        else:
            smtp = smtplib.SMTP(server.host, server.port, timeout=self.timeout)
        with smtp:
            smtp.ehlo()
            if not server.ssl and smtp.has_extn("starttls"):
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if server.username is not None:
                smtp.login(server.username, server.password or "")
            try:
                smtp.send_message(message)
            except smtplib.SMTPRecipientsRefused as refusal:
                # One recipient per message: refused for good only when every answer is 5xx.
                answers = list(refusal.recipients.values())
                if answers and all(500 <= code < 600 for code, _ in answers):
                    code, response = answers[0]
                    raise RecipientRefused(code, _text(response)) from refusal
                raise
        return "sent"


class LogMailer:
    """No SMTP server configured: the e-mail goes to the log, whole, instead."""

    def send(self, message: EmailMessage) -> str:
        body = message.get_body(("plain",))
        log.info(
            "email_not_sent_no_smtp",
            message_id=message["Message-ID"],
            mail_from=message["From"],
            to=message["To"],
            subject=message["Subject"],
            body=body.get_content() if isinstance(body, EmailMessage) else "",
        )
        return "logged"


def mailer_for(settings: Settings) -> Mailer:
    server = settings.smtp_server
    return LogMailer() if server is None else SmtpMailer(server)


def _text(response: bytes | str) -> str:
    return response.decode("utf-8", "replace") if isinstance(response, bytes) else response


__all__ = ["LogMailer", "Mailer", "RecipientRefused", "SmtpMailer", "mailer_for"]
