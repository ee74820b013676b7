"""A real SMTP server (aiosmtpd) on a free local port, and the mailbox it delivers to."""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller


class Mailbox:
    """An aiosmtpd handler that keeps every message it accepts; while `refusing`, it refuses
    every recipient for good (550), as a server does for an address that does not exist.
    Each accepted message takes `delay` seconds to answer, as a real server's may. While an
    address is in `stalling`, the answer to RCPT TO for it does not come (the server hangs on
    that recipient; other connections go on); `stalled` counts those hung RCPTs."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.messages: list[EmailMessage] = []
        self.refused: list[str] = []
        self.refusing = False
        self.stalling: set[str] = set()
        self.stalled = 0
        self._lock = threading.Lock()

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.stalling:
            with self._lock:
                self.stalled += 1
            while address in self.stalling:  # the client gives up meanwhile, or not
                await asyncio.sleep(0.05)
        if self.refusing:
            with self._lock:
                self.refused.append(address)
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self.messages.append(message)
        await asyncio.sleep(self.delay)
        return "250 Message accepted for delivery"

    def received(self) -> list[EmailMessage]:
        with self._lock:
            return list(self.messages)

    def with_id(self, message_id: str) -> list[EmailMessage]:
        return [m for m in self.received() if m["Message-ID"] == message_id]

    def message_ids(self) -> Counter[str]:
        """How many times each Message-ID arrived."""
        return Counter(str(m["Message-ID"]) for m in self.received())


@contextmanager
def smtp_server(mailbox: Mailbox, port: int) -> Iterator[Controller]:
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


def smtp_url(port: int) -> str:
    return f"smtp://127.0.0.1:{port}"
