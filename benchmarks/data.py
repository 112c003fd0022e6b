"""The data the benchmark measures on, generated from a seed and loaded by binary COPY.

Four tenants hold 50%, 10%, 1% and 39% of the chunks, agent executions and projects, so
tenant-filtered search can be measured at three shares of the one shared HNSW index.
Text is drawn from a made-up vocabulary with a Zipf-like frequency, so full-text and
semantic search both find matches, and it is embedded with the configured EMBEDDER,
the same embedder chunk_search uses for its queries.

Loading goes around the services on purpose (seeding a million executions through
them would take hours): the owner COPYs straight into each table, which PostgreSQL
allows only while row-level security is not forced on it, so each table is un-forced
for its COPY and forced again in the same transaction. The insert trigger that refuses
new executions in a final status is switched off for theirs: this is history. So are
the audit trail's triggers (core.db.audit) for every loaded row: a load is not a write
anyone made, and the benchmark measures the trail's cost on writes apart
(benchmarks/audit.py).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import accumulate

import psycopg
from psycopg import sql

from benchmarks.scales import Scale
from core.db import partitions
from core.db.audit import AUDIT_TRIGGER
from core.hashing import sha256_hex
from core.ids import uuid7, uuid7_at
from documents.embedding import Embedder

# (slug, share of every table's rows); the first three are measured, the last is the rest.
TENANT_SHARES = (("bench-50", 0.50), ("bench-10", 0.10), ("bench-01", 0.01), ("bench-rest", 0.39))
MEASURED_SHARES = TENANT_SHARES[:3]
TOPICS = ("billing", "onboarding", "search", "exports", "retrieval", "audit", "payments", "alerts")
METADATA_PROBE = {"topic": "billing"}
DOCUMENT_TYPES = ("about", "specification", "architecture", "plan")
AGENT_TYPES = ("writer", "reviewer", "planner", "researcher", "summarizer", "critic")
MODELS = ("gpt-4o-mini", "claude-sonnet", "llama-3-70b", "mistral-large")
STATUSES = (
    ("succeeded", 70),
    ("failed", 10),
    ("cancelled", 5),
    ("running", 10),
    ("pending", 5),
)
# A search term as common as one agent type, and one that a handful of rows carry.
COMMON_TERM = "writer"
RARE_TERM = "zeppelin"
RARE_ROWS = 5
# How far back the generated run history goes (four monthly partitions or five).
HISTORY_DAYS = 90
# As the owner, with the bypass its policies let through.
USAGE_ROLLUP_FILL_SQL = """
SELECT set_config('app.rls_bypass', 'on', true);
INSERT INTO execution_usage_daily (tenant_id, day, model, executions, failures,
    prompt_tokens, completion_tokens, cost_usd)
SELECT tenant_id, (coalesce(started_at, created_at) AT TIME ZONE 'UTC')::date, model,
    count(*), count(*) FILTER (WHERE status = 'failed'), sum(prompt_tokens),
    sum(completion_tokens), sum(cost_usd)
FROM agent_executions GROUP BY 1, 2, 3;
SELECT set_config('app.rls_bypass', '', true);
"""
CHUNKS_PER_DOCUMENT = 50
VOCABULARY_SIZE = 20_000
# A topic per this many chunks, so its cluster keeps its size whatever the scale.
CHUNKS_PER_TOPIC = 150
TOPIC_WORDS = 40
TOPIC_SHARE = 0.5
DELETED_PROJECT_SHARE = 0.05


class Vocabulary:
    """Made-up words with Zipf-like frequencies (a few very common, most rare), and topics.

    A topic is a small set of words of its own. Texts of one topic share many words, so
    their embeddings cluster, as a real embedder's do for texts about one subject;
    without topics every text is about equally far from every other and nearest
    neighbours mean little.
    """

    SYLLABLES = ("ka", "lo", "mi", "ren", "tu", "sa", "vor", "el", "qui", "dan", "po", "zi")

    def __init__(self, rng: random.Random, topics: int, size: int = VOCABULARY_SIZE) -> None:
        words: set[str] = set()
        while len(words) < size:
            words.add("".join(rng.choices(self.SYLLABLES, k=rng.randint(2, 5))))
        self.words = sorted(words)
        rng.shuffle(self.words)
        self.cumulative = list(accumulate(1.0 / rank for rank in range(1, size + 1)))
        self.topics = [rng.sample(self.words, TOPIC_WORDS) for _ in range(topics)]

    def text(self, rng: random.Random, length: int, topic: int) -> str:
        """`length` words, about TOPIC_SHARE of them from the topic's own words."""
        own = self.topics[topic]
        return " ".join(
            rng.choice(own) if rng.random() < TOPIC_SHARE else word
            for word in rng.choices(self.words, cum_weights=self.cumulative, k=length)
        )


@dataclass
class TenantData:
    """One benchmark tenant: its row, its share of the data, its projects and some texts."""

    tenant: object  # tenancy.models.Tenant
    slug: str
    share: float
    project_ids: list[uuid.UUID] = field(default_factory=list)
    # Contents of some of its chunks, to build queries from.
    sample_texts: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.share:.0%}"


@dataclass
class Dataset:
    """What was generated, as the paths need it."""

    tenants: list[TenantData]
    superuser: object  # tenancy.models.User
    hot_project_id: uuid.UUID
    vocabulary: Vocabulary

    @property
    def hot(self) -> TenantData:
        """The 50% tenant: the read paths' tenant."""
        return self.tenants[0]

    def measured(self) -> list[TenantData]:
        return [data for data in self.tenants if (data.slug, data.share) in MEASURED_SHARES]

    def tenant_ids(self) -> list[uuid.UUID]:
        return [data.tenant.pk for data in self.tenants]


def column_types(cursor: psycopg.Cursor, table: str, columns: Iterable[str]) -> list[int]:
    """The type oids of `columns` of `table`, for a binary COPY's set_types."""
    columns = list(columns)
    cursor.execute(
        "SELECT attname, atttypid FROM pg_attribute WHERE attrelid = %s::regclass"
        " AND attname = ANY(%s)",
        [table, columns],
    )
    oids = dict(cursor.fetchall())
    return [oids[column] for column in columns]


def copy_rows(
    cursor: psycopg.Cursor,
    table: str,
    columns: list[str],
    rows: Iterable[tuple],
    *,
    types_of: str | None = None,
) -> None:
    """Binary COPY of `rows` into `table`, typed like `types_of` (default: the table)."""
    oids = column_types(cursor, types_of or table, columns)
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with cursor.copy(statement) as copy:
        copy.set_types(oids)
        for row in rows:
            copy.write_row(row)


def _load(
    conn: psycopg.Connection,
    table: str,
    columns: list[str],
    rows: Iterable[tuple],
    *,
    without_user_triggers: bool = False,
) -> None:
    name = sql.Identifier(table)
    with conn.transaction(), conn.cursor() as cursor:
        cursor.execute(sql.SQL("ALTER TABLE {} NO FORCE ROW LEVEL SECURITY").format(name))
        if without_user_triggers:
            cursor.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER USER").format(name))
        audited = _without_audit(cursor, table)
        copy_rows(cursor, table, columns, rows)
        # Django's foreign keys are deferred; ALTER TABLE refuses to run with their
        # checks pending, so they run now.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        if without_user_triggers:
            cursor.execute(sql.SQL("ALTER TABLE {} ENABLE TRIGGER USER").format(name))
        _with_audit(cursor, table, audited)
        cursor.execute(sql.SQL("ALTER TABLE {} FORCE ROW LEVEL SECURITY").format(name))


def _without_audit(cursor: psycopg.Cursor, table: str) -> bool:
    """Switch `table`'s audit trigger off for this load; whether it has one."""
    cursor.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = %s::regclass AND tgname = %s)",
        [table, AUDIT_TRIGGER],
    )
    audited = cursor.fetchone()[0]
    if audited:
        cursor.execute(
            sql.SQL("ALTER TABLE {} DISABLE TRIGGER {}").format(
                sql.Identifier(table), sql.Identifier(AUDIT_TRIGGER)
            )
        )
    return audited


def _with_audit(cursor: psycopg.Cursor, table: str, audited: bool) -> None:
    if audited:
        cursor.execute(
            sql.SQL("ALTER TABLE {} ENABLE TRIGGER {}").format(
                sql.Identifier(table), sql.Identifier(AUDIT_TRIGGER)
            )
        )


def _soft_delete(conn: psycopg.Connection, project_ids: list[uuid.UUID], now: datetime) -> None:
    """Soft-delete the projects after their rows were loaded, as the service would."""
    with conn.transaction(), conn.cursor() as cursor:
        cursor.execute("ALTER TABLE projects NO FORCE ROW LEVEL SECURITY")
        audited = _without_audit(cursor, "projects")
        cursor.execute("UPDATE projects SET deleted_at = %s WHERE id = ANY(%s)", [now, project_ids])
        _with_audit(cursor, "projects", audited)
        cursor.execute("ALTER TABLE projects FORCE ROW LEVEL SECURITY")


def _split(total: int, minimum: int = 1) -> list[int]:
    """`total` rows shared out by TENANT_SHARES, each tenant getting at least `minimum`."""
    return [max(minimum, round(total * share)) for _slug, share in TENANT_SHARES]


def _past(rng: random.Random, now: datetime, days: int = HISTORY_DAYS) -> datetime:
    return now - timedelta(seconds=rng.uniform(0, days * 86_400))


def _project_rows(
    rng: random.Random,
    tenants: list[TenantData],
    scale: Scale,
    now: datetime,
    deleted_ids: list[uuid.UUID],
) -> Iterator[tuple]:
    for data, count in zip(tenants, _split(scale.projects, minimum=2), strict=True):
        for number in range(count):
            project_id = uuid7()
            data.project_ids.append(project_id)
            topic = rng.choice(TOPICS)
            created = _past(rng, now)
            # The first project of each tenant stays live: the read paths ask for it.
            # Deleted once their rows are loaded (_soft_delete): a deleted project takes
            # no new rows.
            if number > 0 and rng.random() < DELETED_PROJECT_SHARE:
                deleted_ids.append(project_id)
            yield (
                project_id,
                created,
                created + timedelta(hours=rng.uniform(0, 48)),
                data.tenant.pk,
                f"{topic} project {number}",
                rng.choice(("draft", "in_progress", "completed", "archived")),
                rng.randint(1, 4),
                "en",
                {"topic": topic, "priority": rng.randint(1, 5), "source": "bench"},
                None,
            )


def _version_rows(
    rng: random.Random,
    tenants: list[TenantData],
    scale: Scale,
    hot_project_id: uuid.UUID,
    vocabulary: Vocabulary,
) -> Iterator[tuple]:
    for data in tenants:
        for project_id in data.project_ids:
            per_type = (
                scale.hot_versions_per_type
                if project_id == hot_project_id
                else scale.versions_per_type
            )
            for document_type in DOCUMENT_TYPES:
                previous = None
                for version in range(1, per_type + 1):
                    body = vocabulary.text(rng, 60, rng.randrange(len(vocabulary.topics)))
                    content = f"# {document_type} v{version}\n\n{body}\n"
                    digest = sha256_hex(content)
                    yield (
                        data.tenant.pk,
                        project_id,
                        document_type,
                        version,
                        content,
                        digest,
                        previous,
                        {"source": "bench"},
                    )
                    previous = digest


def _document_and_chunk_rows(
    rng: random.Random,
    tenants: list[TenantData],
    scale: Scale,
    vocabulary: Vocabulary,
    embedder: Embedder,
) -> tuple[list[tuple], Iterator[tuple]]:
    """Document rows (all of them, few) and a stream of chunk rows (embedded as they go)."""
    documents = []
    plan = []  # (tenant data, document id, chunks in it, topic)
    for data, count in zip(tenants, _split(scale.chunks, minimum=20), strict=True):
        for start in range(0, count, CHUNKS_PER_DOCUMENT):
            document_id = uuid7()
            documents.append(
                (
                    document_id,
                    data.tenant.pk,
                    f"{data.slug} handbook {start // CHUNKS_PER_DOCUMENT}",
                    f"bench/{document_id}",
                    "text/plain",
                    0,
                    "",
                    "ready",
                    "",
                    {},
                )
            )
            plan.append(
                (
                    data,
                    document_id,
                    min(CHUNKS_PER_DOCUMENT, count - start),
                    rng.randrange(len(vocabulary.topics)),
                )
            )

    def chunks() -> Iterator[tuple]:
        for data, document_id, count, topic in plan:
            texts = [vocabulary.text(rng, rng.randint(60, 120), topic) for _ in range(count)]
            if len(data.sample_texts) < 200:
                data.sample_texts.extend(texts[:4])
            for ordinal, (text, vector) in enumerate(
                zip(texts, embedder.embed(texts), strict=True)
            ):
                yield (
                    data.tenant.pk,
                    document_id,
                    ordinal,
                    text,
                    len(text.split()),
                    vector,
                    embedder.model,
                    {"source": "bench"},
                )

    return documents, chunks()


def _execution_rows(
    rng: random.Random, tenants: list[TenantData], scale: Scale, now: datetime
) -> Iterator[tuple]:
    statuses = [status for status, _weight in STATUSES]
    weights = [weight for _status, weight in STATUSES]
    rare_left = RARE_ROWS
    for data, count in zip(tenants, _split(scale.executions), strict=True):
        correlation_id = uuid.uuid4()
        for number in range(count):
            if number % 4 == 0:
                correlation_id = uuid.uuid4()  # a run of four steps
            status = rng.choices(statuses, weights=weights)[0]
            # Made over the last 90 days: the id carries that time, so the rows spread
            # over agent_executions' monthly partitions as real history does.
            created = _past(rng, now)
            started = None if status == "pending" else created
            finished = status in ("succeeded", "failed", "cancelled")
            completed = started + timedelta(seconds=rng.uniform(0.5, 120)) if finished else None
            agent_type = rng.choice(AGENT_TYPES)
            if rare_left and number % 997 == 1:
                agent_type, rare_left = f"{RARE_TERM}-auditor", rare_left - 1
            prompt_tokens = rng.randint(100, 4_000)
            yield (
                uuid7_at(created, rng.getrandbits(74)),
                created,
                data.tenant.pk,
                rng.choice(data.project_ids),
                agent_type,
                correlation_id,
                1,
                status,
                {"prompt": f"step {number % 4} of run {correlation_id.hex[:8]}"},
                {"summary": "done"} if status == "succeeded" else {},
                "TimeoutError" if status == "failed" else "",
                "the model did not answer in time" if status == "failed" else "",
                0,
                rng.choice(MODELS),
                prompt_tokens,
                rng.randint(50, 1_500),
                Decimal(prompt_tokens) / Decimal(250_000),
                started,
                completed,
            )


def generate(
    conn: psycopg.Connection, scale: Scale, *, seed: int, embedder: Embedder, progress
) -> Dataset:
    """Create the tenants and the admin user (ORM), then COPY every other row as the owner.

    `conn` is an owner connection to the benchmark database; the HNSW index should be
    absent (benchmarks.schema builds it afterwards, which is one of the measurements).
    """
    from tenancy.models import Tenant, User

    rng = random.Random(seed)  # noqa: S311 - benchmark data, not secrets
    vocabulary = Vocabulary(rng, topics=max(8, scale.chunks // CHUNKS_PER_TOPIC))
    now = datetime.now(UTC)
    tenants = [
        TenantData(tenant=Tenant.objects.create(name=slug, slug=slug), slug=slug, share=share)
        for slug, share in TENANT_SHARES
    ]
    superuser = User.objects.create_superuser(
        email="bench-admin@bench.example.com", password=uuid.uuid4().hex, name="Bench admin"
    )
    progress("projects")
    deleted_ids: list[uuid.UUID] = []
    _load(
        conn,
        "projects",
        [
            "id",
            "created_at",
            "updated_at",
            "tenant_id",
            "name",
            "status",
            "current_step",
            "language",
            "metadata",
            "deleted_at",
        ],
        _project_rows(rng, tenants, scale, now, deleted_ids),
    )
    hot_project_id = tenants[0].project_ids[0]
    progress("document versions")
    _load(
        conn,
        "document_versions",
        [
            "tenant_id",
            "project_id",
            "document_type",
            "version",
            "content",
            "content_sha256",
            "prev_sha256",
            "metadata",
        ],
        _version_rows(rng, tenants, scale, hot_project_id, vocabulary),
    )
    documents, chunks = _document_and_chunk_rows(rng, tenants, scale, vocabulary, embedder)
    progress(f"{len(documents)} documents, {scale.chunks} chunks (embedding them)")
    _load(
        conn,
        "documents",
        [
            "id",
            "tenant_id",
            "title",
            "storage_key",
            "content_type",
            "size_bytes",
            "sha256",
            "status",
            "error_message",
            "metadata",
        ],
        documents,
    )
    _load(
        conn,
        "chunks",
        [
            "tenant_id",
            "document_id",
            "ordinal",
            "content",
            "token_count",
            "embedding",
            "embedding_model",
            "metadata",
        ],
        chunks,
    )
    progress(f"{scale.executions} agent executions")
    with conn.transaction(), conn.cursor() as cursor:
        partitions.ensure_months(
            cursor, "agent_executions", now - timedelta(days=HISTORY_DAYS), now
        )
    _load(
        conn,
        "agent_executions",
        [
            "id",
            "created_at",
            "tenant_id",
            "project_id",
            "agent_type",
            "correlation_id",
            "attempt",
            "status",
            "input_data",
            "output_data",
            "error_type",
            "error_message",
            "retry_count",
            "model",
            "prompt_tokens",
            "completion_tokens",
            "cost_usd",
            "started_at",
            "completed_at",
        ],
        _execution_rows(rng, tenants, scale, now),
        without_user_triggers=True,
    )
    # The usage rollup its triggers would have kept, as agents.0025 fills it.
    with conn.transaction(), conn.cursor() as cursor:
        cursor.execute(USAGE_ROLLUP_FILL_SQL)
    _soft_delete(conn, deleted_ids, now)
    return Dataset(
        tenants=tenants,
        superuser=superuser,
        hot_project_id=hot_project_id,
        vocabulary=vocabulary,
    )
