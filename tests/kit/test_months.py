"""saas/kit/months.py: the one home of month arithmetic. The limiter, the ledger's partitions,
invoices and the pages all take their months from it, and the API and the dashboard refuse the
same month names."""

import calendar
from datetime import UTC, date, datetime

import pytest

from saas.kit import months


@pytest.mark.parametrize("year", [1000, 2024, 2026, 2100, 9999])
def test_every_month_of_a_year_has_its_days(year: int) -> None:
    for number in range(1, 13):
        name = f"{year:04d}-{number:02d}"
        if name == "9999-12":
            continue
        first, after = months.bounds(name)
        assert first == date(year, number, 1)
        assert (after - first).days == calendar.monthrange(year, number)[1]
        assert months.add(first, 1) == after and months.add(after, -1) == first
        assert months.of(datetime(year, number, 15, tzinfo=UTC).timestamp()) == name


@pytest.mark.parametrize(
    "name", ["0000-01", "0999-12", "2026-13", "2026-00", "2026-1", "26-01", "9999-12", "2026-01 "]
)
def test_what_is_not_a_month(name: str) -> None:
    with pytest.raises(ValueError, match="Not a month"):
        months.bounds(name)


def test_seconds_to_the_end_of_a_month_and_the_picker() -> None:
    last_second = datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
    assert months.seconds_to_end(last_second) == 1
    assert months.seconds_to_end(datetime(2026, 2, 1, tzinfo=UTC).timestamp()) == 28 * 86_400
    assert months.since(date(2025, 11, 20), date(2026, 2, 3)) == [
        "2026-02",
        "2026-01",
        "2025-12",
        "2025-11",
    ]
    assert months.since(date(2026, 3, 1), date(2026, 2, 3)) == []


def test_the_api_and_the_dashboard_refuse_the_same_months(client, customer) -> None:
    from tests.support.dashboard import signed_in

    admin = signed_in(client, customer.key)
    for name in ("0000-01", "2026-13"):
        api = client.get(f"/admin/invoices?month={name}", headers=customer.headers)
        assert api.status_code in (403, 422)  # a customer key: 403 before validation
        page = admin.get(f"/dashboard/overview?month={name}")
        assert page.status_code == 422, name
