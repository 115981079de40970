"""How common each trigram is in PostgreSQL's search index (issue #13): what lets `q` ask the trigram GIN
index for a text's rarest few trigrams instead of all of them.

Handed `doc ILIKE '%datasources/31337%'`, pg_trgm looks up every trigram of the text, and the posting lists
of common ones ("dat", "our") hold most of the log: 18-32 ms over 1,000,000 events, growing with the log.
Asked for its two rarest ("313", "337") it read 17 entries in 0.5 ms. The GIN index keeps no counts to
choose by, so each process samples the index's documents (TABLESAMPLE, ~SAMPLE_DOCS of them, ~150 ms over
1,000,000 events) in a thread of its own and keeps the counts for REFRESH_S (SMALL_REFRESH_S while the index
is smaller than the sample); no request waits for it, and
until the first sample is in, `q` gives the whole text to the index as before. The counts only choose which
trigrams to ask for: any of a text's trigrams give a superset of its matches, and the page tests every
candidate, so a stale or skewed sample can cost time but never a result.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa

from auditkeep.storage.queries import ascii_lower

if TYPE_CHECKING:
    from auditkeep.storage.base import Storage

log = logging.getLogger(__name__)

SAMPLE_DOCS = 5_000
REFRESH_S = 600.0
# A sample of an index smaller than SAMPLE_DOCS (a new install's, growing) is the whole index, cheap to
# take and soon out of date: it is retaken after this long instead.
SMALL_REFRESH_S = 60.0
# The rarest trigrams are asked for only when the rarest is in at most this share of the documents: for
# a text whose every letter-and-digit trigram is common ("dashboards/42": the rarest in 24%), the whole
# text's trigrams, pg_trgm's word-edge ones (" 42") among them, select far fewer.
RARE_SHARE = 0.02
# A text whose rarest trigram is in at most this share of the documents is not common enough to walk
# (pages._dense wants it in 1.25% of the walk's first events) unless it crowds one stretch of the log:
# its page skips that probe (~4 ms on PostgreSQL) and goes to the index, which is exact either way and,
# for such a stretch, reads at most CANDIDATE_CAP candidates before walking after all.
SPARSE_SHARE = 0.01
# A trigram pg_trgm surely extracts from every document containing the text: three ASCII letters or
# digits in a row are inside one of its words whatever the locale, so the document holds them as one of
# its trigrams (pg_trgm folds case as ILIKE does).
_WORD_TRIGRAM = re.compile(r"[a-z0-9]{3}")

# The LIMIT bounds a sample whose share was set from a stale size (SAMPLE_DOCS * SAMPLE_SLACK documents).
SAMPLE_SLACK = 4
# Documents per 8 KB page, at least (a document is an event's log_entry and url: ~100-200 bytes), for a
# table whose row count the statistics do not know yet (never analyzed: reltuples -1).
DOCS_PER_PAGE = 40

_SAMPLE_SQL = (
    "WITH s AS MATERIALIZED (SELECT doc FROM search_docs TABLESAMPLE SYSTEM (%s) LIMIT %s) "
    "SELECT NULL, count(*) FROM s UNION ALL SELECT t, count(*) FROM (SELECT unnest(show_trgm(doc)) AS t FROM s) "
    "AS g GROUP BY t")


@dataclass(frozen=True, slots=True)
class Sample:
    """How many documents were sampled, and how many of them hold each trigram."""

    docs: int
    counts: dict[str, int]

    def rarest(self, text: str, k: int) -> list[str]:
        """Up to `k` of the letter-and-digit trigrams of `text` (A-Z folded), rarest first; none when the
        text has no more than `k` of them (the whole text is as selective) or the rarest is not rare."""
        lowered = ascii_lower(text)
        grams = {g for i in range(len(lowered) - 2) if _WORD_TRIGRAM.fullmatch(g := lowered[i:i + 3])}
        if len(grams) <= k:
            return []
        chosen = sorted(sorted(grams), key=lambda g: self.counts.get(g, 0))[:k]
        return chosen if self.share(chosen[0]) <= RARE_SHARE else []

    def share(self, gram: str) -> float:
        """The share of the sampled documents that hold `gram`."""
        return self.counts.get(gram, 0) / max(self.docs, 1)


class TrigramCounts:
    """One process's sample of one database's search index, retaken in the background."""

    def __init__(self) -> None:
        self._sample: Sample | None = None
        self._taken = 0.0
        self._refreshing = False
        self._lock = threading.Lock()

    def current(self, storage: Storage) -> Sample | None:
        """The last sample (None before the first); a sample older than REFRESH_S is retaken in a thread
        meanwhile."""
        with self._lock:
            age = time.monotonic() - self._taken
            stale = self._sample is None or age > (REFRESH_S if self._sample.docs >= SAMPLE_DOCS else SMALL_REFRESH_S)
            start = stale and not self._refreshing
            if start:
                self._refreshing = True
        if start:
            threading.Thread(target=self._refresh, args=(storage,), name="auditkeep-trigram-sample",
                             daemon=True).start()
        return self._sample

    def _refresh(self, storage: Storage) -> None:
        try:
            taken: Sample | None = sample(storage)
        except sa.exc.SQLAlchemyError:  # the next `current` tries again
            log.warning("sampling the search index's trigrams failed", exc_info=True)
            taken = None
        with self._lock:
            if taken is not None:
                self._sample, self._taken = taken, time.monotonic()
            self._refreshing = False


def sample(storage: Storage) -> Sample:
    """Trigram counts over ~SAMPLE_DOCS documents of the search index, drawn at random (by page)."""
    with storage.read() as conn:
        # The statistics' row count, or the table's size now when they have none (a table indexed in bulk
        # before autovacuum analyzed it would otherwise be sampled whole).
        known, pages = conn.exec_driver_sql(
            "SELECT reltuples, pg_relation_size('search_docs') / 8192 FROM pg_class "
            "WHERE oid = 'search_docs'::regclass").one()
        docs = max(float(known or 0), float(pages or 0) * DOCS_PER_PAGE, 1.0)
        percent = min(100.0, 100.0 * SAMPLE_DOCS / docs)
        rows = conn.exec_driver_sql(_SAMPLE_SQL, (percent, SAMPLE_DOCS * SAMPLE_SLACK)).all()
    return Sample(next(int(n) for t, n in rows if t is None), {str(t): int(n) for t, n in rows if t is not None})


_samples: weakref.WeakKeyDictionary[Storage, TrigramCounts] = weakref.WeakKeyDictionary()
_samples_lock = threading.Lock()


def sample_for(storage: Storage) -> Sample | None:
    """This process's last sample of `storage`'s search index (None until the first is in)."""
    with _samples_lock:
        counts = _samples.setdefault(storage, TrigramCounts())
    return counts.current(storage)
