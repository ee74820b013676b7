"""Personal data in the event log, sealed with a key per customer (crypto-shredding).

The log is append-only and hash-chained, so personal data can never be deleted from it. It is
written sealed instead: AES-256-GCM under a key of the customer's own, kept outside the log
(`CustomerKeys`). Destroying that key (`ledger customers forget EMAIL`) erases the data while
every event, its bytes and so the hash chain stay exactly as they were.

What an event holds is an envelope, `{"customer_id": <uuid>, "sealed": <base64>}`: a random id
(no digest of the address, which anyone could recompute from a guess) and the nonce and
ciphertext of the personal data as JSON. The customer id is the AEAD's associated data, so an
envelope cannot be moved onto another customer's key unnoticed.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
_NONCE_BYTES = 12

Envelope = Mapping[str, str]


@dataclass(frozen=True)
class CustomerKey:
    customer_id: UUID
    key: bytes


@dataclass(frozen=True)
class Contact:
    """The personal data the ledger keeps of a customer: the address its e-mail goes to."""

    email: str


def normalized_email(email: str) -> str:
    """The form an address is looked up by: `Jane@Example.com ` and `jane@example.com` are
    one customer (mail providers treat local parts case-insensitively in practice)."""
    return email.strip().lower()


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def seal(key: CustomerKey, contact: Contact) -> dict[str, str]:
    nonce = os.urandom(_NONCE_BYTES)
    plaintext = json.dumps({"email": contact.email}, separators=(",", ":")).encode()
    ciphertext = AESGCM(key.key).encrypt(nonce, plaintext, key.customer_id.bytes)
    return {
        "customer_id": str(key.customer_id),
        "sealed": base64.b64encode(nonce + ciphertext).decode("ascii"),
    }


def customer_of(envelope: Envelope) -> UUID:
    return UUID(envelope["customer_id"])


def unseal(key: CustomerKey, envelope: Envelope) -> Contact:
    """The contact sealed in `envelope`; raises ValueError when it was not sealed with `key`
    or was altered."""
    raw = base64.b64decode(envelope["sealed"])
    try:
        plaintext = AESGCM(key.key).decrypt(
            raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], key.customer_id.bytes
        )
    except InvalidTag as error:
        raise ValueError("the envelope was not sealed with this customer's key") from error
    return Contact(email=str(json.loads(plaintext)["email"]))


class CustomerKeys(Protocol):
    """Where the customers' keys live, outside the log."""

    def key_for(self, email: str) -> CustomerKey:
        """The customer's key, made on first use."""
        ...

    def key_of(self, customer_id: UUID) -> CustomerKey | None:
        """The customer's key, or None once it was destroyed."""
        ...

    def forget(self, email: str) -> UUID | None:
        """Destroys the customer's key; returns the customer's id, None if there was none."""
        ...


class PersonalData:
    """Seals a customer's contact for the log, and opens it again while the key exists."""

    def __init__(self, keys: CustomerKeys) -> None:
        self.keys = keys

    def seal(self, email: str | None) -> dict[str, str] | None:
        if not email:
            return None
        return seal(self.keys.key_for(email), Contact(email=email.strip()))

    def open(self, envelope: Envelope) -> Contact | None:
        """The contact, or None when the customer was forgotten (the key is gone)."""
        key = self.keys.key_of(customer_of(envelope))
        return None if key is None else unseal(key, envelope)


__all__ = [
    "Contact",
    "CustomerKey",
    "CustomerKeys",
    "Envelope",
    "PersonalData",
    "new_key",
    "normalized_email",
    "seal",
    "unseal",
]
