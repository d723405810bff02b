import asyncio
import re

from sqlalchemy import event

from saas.auth import key_format
from saas.keys.authenticator import KeyAuthenticator
from saas.kit.db import make_engine


def test_generated_keys_are_well_formed_and_distinct():
    generated = {key_format.generate_key() for _ in range(200)}
    assert len(generated) == 200
    for key in generated:
        assert re.fullmatch(r"sk_live_[0-9A-Za-z]{36}", key)
        assert key_format.is_well_formed(key)


def test_checksum_rejects_any_single_typo():
    key = key_format.generate_key()
    for position in range(len(key_format.KEY_PREFIX), len(key)):
        replacement = "a" if key[position] != "a" else "b"
        typo = key[:position] + replacement + key[position + 1 :]
        assert not key_format.is_well_formed(typo), position


def test_malformed_shapes_are_rejected():
    key = key_format.generate_key()
    for bad in [
        "",
        "sk_live_",
        key[:-1],
        key + "x",
        "pk_live_" + key[8:],
        key.replace("_", "-"),
        key[:20] + "!" + key[21:],
        "sk_live_" + "é" * 36,
    ]:
        assert not key_format.is_well_formed(bad), bad


def test_hash_is_sha256_hex_and_prefix_is_short():
    key = key_format.generate_key()
    digest = key_format.hash_key(key)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert digest != key and key not in digest
    assert key_format.display_prefix(key) == key[:14]
    assert key_format.hash_key(key) == digest != key_format.hash_key(key_format.generate_key())


def test_keys_are_redacted_from_text_bound_for_the_logs():
    key = key_format.generate_key()
    assert key_format.redact_keys(f"/v1/keys/{key}/x") == "/v1/keys/sk_live_[redacted]/x"
    assert key_format.redact_keys(f"{key[:20]} and {key}") == (
        "sk_live_[redacted] and sk_live_[redacted]"
    )
    assert key_format.redact_keys("/v1/en_core_web_sm/entities") == "/v1/en_core_web_sm/entities"


def test_a_key_is_looked_up_only_by_the_hash_of_all_of_it(settings, make_customer):
    """Why a near miss costs what a wholly wrong key costs (measured: bench/key_timing.py):
    the database is asked for the SHA-256 of the whole presented key and nothing else, so a
    shared prefix shares nothing in what is searched, and no Python string compare of a secret
    happens at all (the unique index finds the row or not)."""
    customer = make_customer()
    body = customer.key[: -key_format.CHECKSUM_CHARS]
    near = key_format.with_checksum(body[:-1] + ("a" if body[-1] != "a" else "b"))
    assert key_format.is_well_formed(near)
    engine = make_engine(settings.database_url)
    sent: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        sent.append(f"{statement} {parameters!r}")

    event.listen(engine, "before_cursor_execute", record)
    authenticator = KeyAuthenticator(engine, ttl=60, max_size=10, flush_seconds=60)
    try:
        assert asyncio.run(authenticator.lookup(near)) is None
        found = asyncio.run(authenticator.lookup(customer.key))
    finally:
        engine.dispose()
    assert found is not None and found.key_id == customer.key_id
    assert len(sent) == 2 and all("key_hash" in query for query in sent)
    assert key_format.hash_key(near) in sent[0] and key_format.hash_key(customer.key) in sent[1]
    everything = "\n".join(sent)
    for part in (key_format.display_prefix(customer.key), body[len(key_format.KEY_PREFIX) :]):
        assert part not in everything
