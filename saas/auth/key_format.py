"""API keys: `sk_live_<30 base62 random><6 base62 CRC32>`.

Like GitHub's and Stripe's tokens, the fixed prefix lets secret scanners spot a leaked key and the
checksum rejects typos and made-up keys before any cache, database or Redis lookup. 30 base62
characters carry 178 bits of randomness, so a plain SHA-256 (no salt, no slow hash) is a safe way to
store them: there is nothing to brute-force, and a hash can be looked up through a unique index.
"""

import hashlib
import hmac
import re
import secrets
import string
import zlib
from urllib.parse import urlsplit

KEY_PREFIX = "sk_live_"
RANDOM_CHARS = 30
CHECKSUM_CHARS = 6
DISPLAY_CHARS = 6  # random characters kept in the public prefix
KEY_LENGTH = len(KEY_PREFIX) + RANDOM_CHARS + CHECKSUM_CHARS

_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_BASE62_SET = frozenset(_BASE62)
_KEY_SHAPED = re.compile(re.escape(KEY_PREFIX) + "[0-9A-Za-z]*")


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        chars.append(_BASE62[digit])
    return "".join(reversed(chars))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), CHECKSUM_CHARS)


def with_checksum(body: str) -> str:
    """`body` (prefix and random characters) with its checksum appended."""
    return body + _checksum(body)


def generate_key() -> str:
    return with_checksum(KEY_PREFIX + "".join(secrets.choice(_BASE62) for _ in range(RANDOM_CHARS)))


def is_well_formed(key: str) -> bool:
    """Cheap local check: right prefix, length, alphabet and checksum."""
    if len(key) != KEY_LENGTH or not key.startswith(KEY_PREFIX):
        return False
    rest = key[len(KEY_PREFIX) :]
    if not _BASE62_SET.issuperset(rest):
        return False
    body, checksum = key[:-CHECKSUM_CHARS], key[-CHECKSUM_CHARS:]
    return hmac.compare_digest(_checksum(body), checksum)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def display_prefix(key: str) -> str:
    return key[: len(KEY_PREFIX) + DISPLAY_CHARS]


def redact_keys(text: str) -> str:
    """`text` with whatever follows a key prefix cut out: a client that puts its key in a URL
    path must not get it written to the logs (the access line keeps the rest of the path)."""
    if KEY_PREFIX not in text:  # the usual case, at no regex cost
        return text
    return _KEY_SHAPED.sub(f"{KEY_PREFIX}[redacted]", text)


def display_url(url: str) -> str:
    """Scheme and host only: many webhook URLs carry their own credential in the path or query
    (Slack's, Discord's), so listings and the audit log never show the rest."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/…"
