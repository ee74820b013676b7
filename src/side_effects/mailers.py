"""How an e-mail leaves: through an SMTP server (`LEDGER_SMTP_URL`), or into the log when
none is configured. A recipient refused for good is told apart from a failure worth retrying."""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
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


@dataclass(frozen=True)
class Email:
    """One plain-text e-mail, before it is put in MIME form.

    Kept apart from `EmailMessage` because building one (the default policy parses every
    header it is given, and `set_content` picks an encoding) costs about half a millisecond of
    CPU per e-mail: the largest single cost of a settled session in the hot-product bench's
    profile. Only a mailer that sends pays it; one that logs does not need it.
    """

    mail_from: str
    to: str
    subject: str
    message_id: str
    text: str

    def to_message(self) -> EmailMessage:
        """The e-mail as it goes out (`Date` is when it is put in this form)."""
        message = EmailMessage()
        message["From"] = self.mail_from
        message["To"] = self.to
        message["Date"] = formatdate(localtime=False, usegmt=True)
        message["Message-ID"] = self.message_id
        message["Subject"] = self.subject
        message.set_content(self.text)
        return message


class Mailer(Protocol):
    """Sends one e-mail. Raises RecipientRefused when the recipient is refused for good, and
    any other exception for a failure worth trying again."""

    def send(self, email: Email) -> str:
        """Sends it; returns the metric's outcome (`sent`, or `logged`)."""
        ...


class SmtpMailer:
    """Through an SMTP server: `smtps://` is TLS from the start; `smtp://` upgrades with
    STARTTLS when the server offers it; logs in when the URL names a user."""

    def __init__(self, server: SmtpServer, timeout: float = SMTP_TIMEOUT_SECONDS) -> None:
        self.server = server
        self.timeout = timeout

    def send(self, email: Email) -> str:
        message = email.to_message()
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

    def send(self, email: Email) -> str:
        log.info(
            "email_not_sent_no_smtp",
            message_id=email.message_id,
            mail_from=email.mail_from,
            to=email.to,
            subject=email.subject,
            body=email.text,
        )
        return "logged"


def mailer_for(settings: Settings) -> Mailer:
    server = settings.smtp_server
    return LogMailer() if server is None else SmtpMailer(server)


def _text(response: bytes | str) -> str:
    return response.decode("utf-8", "replace") if isinstance(response, bytes) else response


__all__ = ["Email", "LogMailer", "Mailer", "RecipientRefused", "SmtpMailer", "mailer_for"]
