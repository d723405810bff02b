"""The one key-status rule, used by authentication, listings, bootstrap and max_keys."""

from datetime import UTC, datetime, timedelta

from saas.auth.principal import KeyStatus, key_status

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
PAST, FUTURE = NOW - timedelta(seconds=1), NOW + timedelta(hours=1)


def test_status_is_decided_in_a_fixed_order() -> None:
    def status(revoked: bool, expires_at: datetime | None, rolled: bool) -> KeyStatus:
        return key_status(revoked=revoked, expires_at=expires_at, rolled=rolled, now=NOW)

    assert status(False, None, False) is KeyStatus.active
    assert status(False, FUTURE, False) is KeyStatus.active
    assert status(False, FUTURE, True) is KeyStatus.grace
    assert status(False, NOW, True) is KeyStatus.expired  # the grace ends at expires_at
    assert status(False, PAST, False) is KeyStatus.expired
    assert status(True, PAST, True) is KeyStatus.revoked  # revoked wins over everything
    assert status(True, None, False) is KeyStatus.revoked


def test_only_active_and_grace_keys_work() -> None:
    assert {s for s in KeyStatus if s.usable} == {KeyStatus.active, KeyStatus.grace}
