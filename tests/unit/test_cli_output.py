"""Pure pieces of the CLI's output: the Web UI view of the golden sagas, base64 hashes."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from golden_press.merkle import hash_b64 as b64
from service.cli.output import sagas_view_url


def test_sagas_view_hides_the_reconciler_runs() -> None:
    url = sagas_view_url("http://127.0.0.1:8233/", "default")
    parts = urlsplit(url)
    assert parts.path == "/namespaces/default/workflows"
    assert parse_qs(parts.query)["query"] == ['WorkflowType != "ReconcileReservationsWorkflow"']


def test_hashes_are_standard_padded_base64() -> None:
    assert b64(bytes(32)) == "A" * 43 + "="
