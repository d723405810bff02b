import re

from saas import security


def test_generated_keys_are_well_formed_and_distinct():
    generated = {security.generate_key() for _ in range(200)}
    assert len(generated) == 200
    for key in generated:
        assert re.fullmatch(r"sk_live_[0-9A-Za-z]{36}", key)
        assert security.is_well_formed(key)


def test_checksum_rejects_any_single_typo():
    key = security.generate_key()
    for position in range(len(security.KEY_PREFIX), len(key)):
        replacement = "a" if key[position] != "a" else "b"
        typo = key[:position] + replacement + key[position + 1 :]
        assert not security.is_well_formed(typo), position


def test_malformed_shapes_are_rejected():
    key = security.generate_key()
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
        assert not security.is_well_formed(bad), bad


def test_hash_is_sha256_hex_and_prefix_is_short():
    key = security.generate_key()
    digest = security.hash_key(key)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert digest != key and key not in digest
    assert security.display_prefix(key) == key[:14]
    assert security.hash_key(key) == digest != security.hash_key(security.generate_key())


def test_keys_are_redacted_from_text_bound_for_the_logs():
    key = security.generate_key()
    assert security.redact_keys(f"/v1/keys/{key}/x") == "/v1/keys/sk_live_[redacted]/x"
    assert security.redact_keys(f"{key[:20]} and {key}") == (
        "sk_live_[redacted] and sk_live_[redacted]"
    )
    assert security.redact_keys("/v1/en_core_web_sm/entities") == "/v1/en_core_web_sm/entities"
