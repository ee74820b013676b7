"""The event log's recorder: the library's, refusing an event that would skip a version.

An aggregate's events are numbered 1, 2, 3 ... and the library's unique key on (aggregate,
version) refuses a second event 78, but not an event 95 on top of 77: a decision made on a
cached aggregate at a version the log does not hold (a failover's new primary without the
commits the old one showed us, or a commit left in doubt) would be recorded after a gap, and
from then on every fresh read of that aggregate fails (eventsourcing's OriginatorVersionError,
"(95, 78)"). Here the insert also requires, in the same transaction, that the log holds the
version each aggregate's new events follow; when it does not, the commit fails as a version
conflict does (IntegrityError), and the decision is made again on what the log holds
(`ledger.decisions`).

The events go in as four arrays in binary, not as the library's one array of a composite type:
psycopg dumps a composite array in text, in Python, field by field. A commit of 40 events costs
the caller 0.41x the library's CPU this way, one of 8 events 0.65x (`bench/event_insert.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier


class LedgerApplicationRecorder(PostgresApplicationRecorder):
    def __init__(self, datastore: PostgresDatastore, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        names = {
            "schema": Identifier(datastore.schema),
            "table": Identifier(events_table_name),
            "function": Identifier(f"{events_table_name}_predecessors_held"),
            "id_type": Identifier(datastore.originator_id_type),
        }
        # SQLSTATE 23505, as for a version taken already: the library maps it to IntegrityError.
        self.sql_create_statements.append(
            SQL(
                "CREATE OR REPLACE FUNCTION {schema}.{function}(ids {id_type}[], versions bigint[])"
                " RETURNS void LANGUAGE plpgsql AS $$ BEGIN"
                " IF EXISTS (SELECT FROM unnest(ids, versions) AS w(id, version)"
                "  WHERE NOT EXISTS (SELECT FROM {schema}.{table} AS e"
                "   WHERE e.originator_id = w.id AND e.originator_version = w.version))"
                " THEN RAISE EXCEPTION 'new events would not follow the version the log holds'"
                "  USING ERRCODE = 'unique_violation';"
                " END IF; END $$"
            ).format(**names)
        )
        self._require_predecessors_text: str | None = None
        self._require_predecessors = SQL(
            "SELECT {schema}.{function}(%b::{id_type}[], %b::bigint[])"
        ).format(**names)
        # As the library's statement, RETURNING included (its `_fetch_ids_after_insert_events`
        # reads the ids), with the columns as arrays.
        self._insert_text: str | None = None
        self._insert = SQL(
            "INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state)"
            " SELECT * FROM unnest(%b::{id_type}[], %b::bigint[], %b::text[], %b::bytea[])"
            " RETURNING notification_id"
        ).format(**names)

    def _insert_stored_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        # The version before each aggregate's first new event (none for a new aggregate).
        follows: dict[Any, int] = {}
        for e in stored_events:
            version = follows.get(e.originator_id)
            if version is None or e.originator_version < version:
                follows[e.originator_id] = e.originator_version
        held = {i: v - 1 for i, v in follows.items() if v > 1}
        if held:
            # On the insert's own cursor, in its pipeline: no round trip of its own. The
            # query is rendered once (psycopg would compose it again on every call).
            if self._require_predecessors_text is None:
                self._require_predecessors_text = self._require_predecessors.as_string(curs)
            params = [list(held), list(held.values())]
            curs.execute(self._require_predecessors_text, params, prepare=True)
        # What the library's `_insert_stored_events` does before its insert.
        self._lock_table(curs)
        self._notify_channel(curs)
        if self._insert_text is None:
            self._insert_text = self._insert.as_string(curs)
        columns = (
            [e.originator_id for e in stored_events],
            [e.originator_version for e in stored_events],
            [e.topic for e in stored_events],
            [e.state for e in stored_events],
        )
        curs.execute(self._insert_text, columns, prepare=True)
