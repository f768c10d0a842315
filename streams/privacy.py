"""Personal data kept out of state: query scrubbing and pseudonymous window keys.

Search text is what a user typed, so it can hold an email address, a phone
number or a card number. Every query is scrubbed here, in training and in
serving alike, before it is encoded; only the scrubbed, hashed form ever
reaches a table, a changelog or a prediction.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata

# NFKC first turns full-width digits and letters (common in Chinese and Japanese
# input methods) into ASCII, so one set of patterns covers them.
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", re.UNICODE)
_IBAN = re.compile(r"\b[A-Za-z]{2}\d{2}(?:[ ]?[A-Za-z0-9]){11,30}\b")
# 13-19 digits, optionally grouped by spaces or dashes: card-like numbers.
_CARD = re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)")
# Phone numbers: an optional +country code, then 7-15 digits with common separators.
_PHONE = re.compile(r"(?<![\w])(?:\+|00)?\d[\d ()./-]{5,18}\d(?![\w])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")
_SPACES = re.compile(r"\s+")


def scrub_query(text: str) -> str:
    """Normalise a search query and replace personal data with placeholders.

    Emails become ``<email>``, IBAN-like numbers ``<iban>``, card-like numbers
    ``<card>`` and phone-like numbers ``<phone>``. Control characters are
    dropped and runs of white space collapse to one space. The result is
    lower-cased, since the model's text features ignore case anyway.
    """
    text = unicodedata.normalize("NFKC", text)
    text = _CONTROL.sub(" ", text)
    text = _EMAIL.sub(" <email> ", text)
    text = _IBAN.sub(" <iban> ", text)
    text = _CARD.sub(" <card> ", text)
    text = _PHONE.sub(_phone_or_keep, text)
    return _SPACES.sub(" ", text).strip().lower()


def _phone_or_keep(match: re.Match[str]) -> str:
    # A model number such as "2024" or a size like "10-12" is not a phone
    # number; only scrub when there are enough digits to reach a person.
    digits = sum(ch.isdigit() for ch in match.group(0))
    return " <phone> " if digits >= 7 else match.group(0)


def pseudonymous_key(user_id: str, secret: bytes | None) -> bytes:
    """The key a user's window is stored under: HMAC-SHA256 of the id when a secret is set.

    Without a secret the key is the user id itself (UTF-8), which keeps the
    table easy to inspect during development.
    """
    raw = user_id.encode("utf-8")
    if not secret:
        return raw
    return hmac.new(secret, raw, hashlib.sha256).digest()
