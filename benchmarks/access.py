"""chunk_search for a member who may see part of the tenant (issue 20, point 2).

In the 50% tenant, knowledge documents are restricted (by one of its owners, through the
restrict path: a set-based `UPDATE documents SET restricted = true` in the owner's
tenant_context, so the triggers derive every chunk's `restricted_to` as in production)
until a viewer, granted none of them, sees 1%, 10% and 50% of the tenant's chunks. The
visible documents are drawn from the seed; each share keeps the previous share's hidden
ones hidden (50%, then 10%, then 1%), and the chunks are vacuumed and analysed after
each change, as autovacuum would, so both sides scan the same clean index with fresh
statistics. At the tiny scale a document (50 chunks) is more than 1% of the tenant:
at least one stays visible, and the notes give the share actually visible.

For each share:

- latency of chunk_search semantic as the viewer against the unrestricted search of the
  same tenant: the same call as one of the tenant's owners, who sees every chunk
  (issue 20: at most 1.2x), interleaved query by query;
- recall@10 of the viewer's results against the exact answer over the visible chunks
  only: a sequential scan ordered by distance over the visible documents' chunks (read as
  the owner, so the visible set comes from the documents left open, not from the policy
  under test); a result counts when its distance is within the exact 10th distance, as
  in benchmarks.search (goal >= 0.95);
- every result the viewer gets belongs to a visible document and k came back, or the
  benchmark stops (LeakedRow, Mismatch): a fast search that shows a hidden chunk, or
  comes back short, measures nothing worth having.

At the end every document is unrestricted again.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass
from statistics import fmean

import psycopg
from pgvector import Vector

from benchmarks.data import Dataset, TenantData
from benchmarks.reference import Reference
from benchmarks.report import PathResult
from benchmarks.scales import Scale
from benchmarks.search import SEMANTIC_QUERY_WORDS, K, _cycle, _ms, _queries, _recall
from benchmarks.timing import Mismatch, interleave, milliseconds, profile
from tenancy.context import BYPASS_SETTING, FULL_ACCESS_SETTING, USER_ID_SETTING

VISIBLE_SHARES = (0.50, 0.10, 0.01)  # the order they are measured in: each hides more
ACCESS_GOAL = 1.2
RECALL_GOAL = 0.95
# `+ 0` keeps the HNSW index from serving the ORDER BY: every visible chunk is compared.
EXACT_VISIBLE_SQL = (
    "SELECT embedding <=> %(q)s FROM chunks WHERE tenant_id = %(tenant)s"
    " AND document_id = ANY(%(documents)s) AND embedding_model = %(model)s"
    f" AND embedding IS NOT NULL ORDER BY (embedding <=> %(q)s) + 0, id LIMIT {K}"
)
VISIBLE_COUNT_SQL = "SELECT count(*) FROM chunks WHERE tenant_id = %(tenant)s"


class LeakedRow(AssertionError):
    """chunk_search returned a chunk the member may not see."""


@dataclass
class Members:
    owner: object  # tenancy.models.User, an owner of the tenant: sees every chunk
    viewer: object  # a viewer granted nothing: sees the unrestricted chunks only


def _members(data: TenantData) -> Members:
    from tenancy.models import MembershipRole, User
    from tenancy.services import membership_set

    users = {}
    for role in (MembershipRole.OWNER, MembershipRole.VIEWER):
        user = User.objects.create_user(
            email=f"bench-{role}@{data.slug}.example.com", password=None, name=f"Bench {role}"
        )
        membership_set(tenant=data.tenant, user=user, role=role)
        users[role] = user
    return Members(owner=users[MembershipRole.OWNER], viewer=users[MembershipRole.VIEWER])


def _documents(owner: psycopg.Connection, data: TenantData) -> dict[uuid.UUID, int]:
    """The tenant's documents and their chunks, read as the database owner."""
    with owner.transaction():
        owner.execute("SELECT set_config(%s, 'on', true)", [BYPASS_SETTING])
        rows = owner.execute(
            "SELECT document_id, count(*) FROM chunks WHERE tenant_id = %s"
            " GROUP BY document_id ORDER BY document_id",
            [data.tenant.pk],
        ).fetchall()
    return dict(rows)


def _visible_documents(
    chunks_of: dict[uuid.UUID, int], candidates: list[uuid.UUID], share: float
) -> list[uuid.UUID]:
    """The first of `candidates` (in a seeded order; those a larger share left visible)
    that hold about `share` of the tenant's chunks, at least one document."""
    target = share * sum(chunks_of.values())
    chosen, held = [], 0
    for document_id in candidates:
        if chosen and held + chunks_of[document_id] / 2 > target:
            break
        chosen.append(document_id)
        held += chunks_of[document_id]
    return chosen


def _restrict(data: TenantData, by, document_ids: list[uuid.UUID], *, value: bool) -> int:
    """Restrict (or open) the documents as the tenant's owner `by`, in one statement.

    The restrict path of documents.services.access (its trigger refuses anyone but an
    owner or admin), for many documents at once.
    """
    from documents.models import Document
    from tenancy.context import tenant_context

    with tenant_context(data.tenant, user=by):
        return Document.objects.filter(tenant_id=data.tenant.pk, pk__in=document_ids).update(
            restricted=value
        )


def _plans(call) -> list[dict]:
    """EXPLAIN ANALYZE of each kNN statement `call` sends through Django, run just before
    it in its own transaction (so under the settings chunk_search made for it)."""
    from django.db import connection

    plans = []

    def explain(execute, sql, params, many, context):
        if "<=>" in sql and sql.lstrip().upper().startswith("SELECT"):
            context["cursor"].execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params)
            document = context["cursor"].fetchone()[0]
            [plan] = json.loads(document) if isinstance(document, str) else document
            plans.append(
                {"plan": _plan_outline(plan["Plan"]), "execution_ms": plan["Execution Time"]}
            )
        return execute(sql, params, many, context)

    with connection.execute_wrapper(explain):
        call()
    return plans


def _plan_outline(node: dict, depth: int = 0) -> list[str]:
    """One line per plan node: its type, index, rows and rows removed by the filter."""
    line = "  " * depth + node["Node Type"]
    if "Index Name" in node:
        line += f" using {node['Index Name']}"
    line += f" (rows {node.get('Actual Rows')}"
    if "Rows Removed by Filter" in node:
        line += f", removed by filter {node['Rows Removed by Filter']}"
    line += ")"
    lines = [line]
    for child in node.get("Plans", []):
        lines += _plan_outline(child, depth + 1)
    return lines


def _share(
    data: TenantData,
    members: Members,
    ref: Reference,
    share: float,
    visible: list[uuid.UUID],
    hidden: list[uuid.UUID],
    visible_chunks: int,
    texts: list[str],
    vectors: dict[str, Vector],
    model: str,
) -> tuple[PathResult, dict]:
    from documents.search import chunk_search

    tenant = data.tenant
    # The viewer's scope, as tenant_context sets it, and the owner's.
    as_viewer = {USER_ID_SETTING: str(members.viewer.pk), FULL_ACCESS_SETTING: ""}
    as_owner = {USER_ID_SETTING: str(members.owner.pk), FULL_ACCESS_SETTING: str(tenant.pk)}
    [[(seen,)]] = ref.run(
        [tenant.pk], [(VISIBLE_COUNT_SQL, {"tenant": tenant.pk})], settings=as_viewer
    )
    if seen != visible_chunks:
        raise LeakedRow(
            f"the viewer sees {seen} chunks of the tenant, {visible_chunks} were left visible"
        )
    visible_set = set(visible)

    def exact_distances(vector: Vector, documents: list[uuid.UUID] = visible) -> list[float]:
        params = {"q": vector, "tenant": tenant.pk, "documents": documents, "model": model}
        [rows] = ref.run([tenant.pk], [(EXACT_VISIBLE_SQL, params)], settings=as_owner)
        return [distance for (distance,) in rows]

    exact = {text: exact_distances(vectors[text]) for text in texts}
    # The owner's answer against the exact one over every chunk of the tenant: the
    # recall of the unrestricted search, to compare with.
    everything = [*visible_set, *hidden]
    owner_exact = {text: exact_distances(vectors[text], everything) for text in texts}
    label = f"{share:.0%}"
    found: list[float] = []
    owner_found: list[float] = []
    viewer_queries, owner_queries = _cycle(texts), _cycle(texts)

    def viewer() -> int:
        text = next(viewer_queries)
        hits = chunk_search(tenant=tenant, query=text, k=K, mode="semantic", user=members.viewer)
        leaked = [hit.chunk_id for hit in hits if hit.document_id not in visible_set]
        if leaked:
            raise LeakedRow(f"chunk_search showed the viewer hidden chunks {leaked} ({label})")
        if len(hits) != K:
            raise Mismatch(f"chunk_search returned {len(hits)} of {K} visible chunks ({label})")
        found.append(_recall([1.0 - hit.score for hit in hits], exact[text]))
        return len(hits)

    def owner() -> int:
        text = next(owner_queries)
        hits = chunk_search(tenant=tenant, query=text, k=K, mode="semantic", user=members.owner)
        owner_found.append(_recall([1.0 - hit.score for hit in hits], owner_exact[text]))
        return len(hits)

    title = f"chunk_search semantic, member sees {label} of the 50% tenant"
    viewer_times, owner_times = interleave(title, viewer, owner, rounds=len(texts), warmup=1)
    # The warm-up round's recall counts as well: every query is measured once.
    recall = fmean(found)
    result = PathResult(
        key=f"chunk_search_restricted_{round(share * 100)}",
        group="search",
        title=title,
        reference_title="unrestricted (an owner)",
        unit="ms",
        project=milliseconds(viewer_times),
        reference=milliseconds(owner_times),
        goal=ACCESS_GOAL,
        notes={
            "recall_at_10": recall,
            "recall_goal": RECALL_GOAL,
            "unrestricted_recall_at_10": fmean(owner_found),
            "visible_documents": len(visible),
            "visible_chunks": visible_chunks,
            "profile": profile(
                lambda: chunk_search(
                    tenant=tenant, query=texts[0], k=K, mode="semantic", user=members.viewer
                )
            ),
            "viewer_plans": _plans(
                lambda: chunk_search(
                    tenant=tenant, query=texts[0], k=K, mode="semantic", user=members.viewer
                )
            ),
        },
    )
    point = {
        "share": share,
        "visible_chunks": visible_chunks,
        "recall": recall,
        "goal": RECALL_GOAL,
        **_ms(viewer_times),
        "unrestricted": {"recall": fmean(owner_found), **_ms(owner_times)},
    }
    return result, point


def measure(
    dataset: Dataset, owner: psycopg.Connection, ref: Reference, scale: Scale, *, seed: int
) -> tuple[list[PathResult], dict]:
    from documents.embedding import get_embedder

    data = dataset.hot
    embedder = get_embedder()
    rng = random.Random(seed)  # noqa: S311 - benchmark inputs, not secrets
    texts = _queries(rng, data, scale.queries, SEMANTIC_QUERY_WORDS)
    embedded = embedder.embed(texts)
    vectors = {text: Vector(vector) for text, vector in zip(texts, embedded, strict=True)}
    members = _members(data)
    chunks_of = _documents(owner, data)
    tenant_chunks = sum(chunks_of.values())
    order = sorted(chunks_of)
    rng.shuffle(order)
    results, points = [], []
    hidden: list[uuid.UUID] = []
    try:
        for share in VISIBLE_SHARES:
            visible = _visible_documents(chunks_of, order, share)
            newly_hidden = [d for d in order if d not in visible and d not in hidden]
            _restrict(data, members.owner, newly_hidden, value=True)
            hidden += newly_hidden
            owner.execute("VACUUM ANALYZE chunks, documents")
            visible_chunks = sum(chunks_of[d] for d in visible)
            result, point = _share(
                data,
                members,
                ref,
                share,
                visible,
                hidden,
                visible_chunks,
                texts,
                vectors,
                embedder.model,
            )
            result.notes["tenant_chunks"] = tenant_chunks
            result.notes["visible_share"] = visible_chunks / tenant_chunks
            point["visible_share"] = visible_chunks / tenant_chunks
            results.append(result)
            points.append(point)
            order = visible  # the next, smaller share is drawn from these
    finally:
        _restrict(data, members.owner, hidden, value=False)
        owner.execute("VACUUM ANALYZE chunks, documents")
    summary = []
    for point in sorted(points, key=lambda point: point["share"]):
        label = f"{point['share']:.0%} of the 50% tenant"
        summary += [
            {"label": f"chunk_search, member sees {label}", **point},
            {"label": f"chunk_search unrestricted, beside {label}", **point["unrestricted"]},
        ]
    return results, {"by_visible_share": points, "summary": summary}
