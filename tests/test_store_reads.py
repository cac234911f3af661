"""Reading the queue never holds up intake, on either database.

On SQLite every write transaction begins IMMEDIATE; a read that did the same would hold
the write lock for as long as it reads, and intake (an SMTP session waiting for its 250)
would wait behind it, then answer 451 after the busy timeout.
"""

from __future__ import annotations

from sqlalchemy import select

from inbox import queries
from inbox.db import make_engine, read
from inbox.models import Case
from normalizer.intake import RawInput, store
from tests.support.emails import eml
from tests.support.helpers import ingest, normalize


def test_an_open_read_does_not_block_intake(engine, db_url):
    ingest(engine, eml("gmail_first_contact.eml"))
    normalize(engine)
    impatient = make_engine(db_url, busy_timeout_ms=100)
    try:
        with read(engine) as conn:
            assert len(conn.execute(select(Case.id)).all()) == 1  # a transaction is open
            [stored] = store(
                impatient,
                [
                    RawInput(
                        connector="smtp",
                        channel="email",
                        source_key="smtp:during-a-read",
                        payload=eml("thunderbird_attachments.eml"),
                    )
                ],
            )
            assert not stored.duplicate
            # The reader keeps its snapshot; the new input shows up in the next read.
            assert len(conn.execute(select(Case.id)).all()) == 1
    finally:
        impatient.dispose()
    normalize(engine)
    assert len(queries.list_cases(engine)) == 2
