"""The raw-SQL append path relies on the Event model's column order; pin it."""

from events import services
from events.models import Event


def test_event_columns_match_the_raw_insert_and_positional_construction():
    attnames = [f.attname for f in Event._meta.concrete_fields]
    assert attnames == [
        "id",
        "session_id",
        "run_id",
        "sequence_number",
        "type",
        "data",
        "metadata",
        "provider",
        "timestamp",
    ]
    assert [c.strip() for c in services._COLS.split(",")] == [
        f.column for f in Event._meta.concrete_fields
    ]
