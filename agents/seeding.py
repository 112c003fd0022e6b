"""Seeds agent runs in every status: steps, retries, retrieved sources, a produced
version, the conversation around it and evaluations; failures recorded with their
tracebacks, recovered by a retry or not; decisions with the options considered; and
change proposals in every status, each a real diff of a document's latest version, by
an editor agent whose run also records a decision."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from decimal import Decimal

from django.core.exceptions import ValidationError

from agents.models import ExecutionStatus, ProposalStatus
from agents.services import (
    change_proposal_apply,
    change_proposal_approve,
    change_proposal_propose,
    change_proposal_reject,
    decision_record,
    evaluation_record,
    execution_cancel,
    execution_create,
    execution_fail,
    execution_finish,
    execution_record_sources,
    execution_retry,
    execution_start,
    message_add,
)
from core.seed_runner import SeedRun, Volume
from documents.models import DocumentType
from documents.search import chunk_search
from documents.seeding import revise
from documents.selectors import latest_versions
from documents.services import document_version_create

VOLUMES = {"executions": Volume(2, 0, 1_000, "agent runs per project")}
MODEL = "demo-model-1"
# The outcome of successive runs cycles through every status.
OUTCOMES = [
    ExecutionStatus.SUCCEEDED,
    ExecutionStatus.FAILED,
    ExecutionStatus.RUNNING,
    ExecutionStatus.PENDING,
    ExecutionStatus.CANCELLED,
]


def _usage(run: SeedRun) -> dict:
    prompt, completion = run.rng.randint(300, 4000), run.rng.randint(100, 1500)
    cost = Decimal(prompt * 3 + completion * 15) / Decimal(1_000_000)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "cost_usd": cost}


def _successful_run(run: SeedRun, tenant, project, root) -> None:
    """Plan, retrieve, write: the writer's output becomes a new specification version."""
    topic = project.metadata.get("topic", "the product")
    question = f"How should {topic} handle retries and storage?"
    message_add(tenant=tenant, project=project, role="user", content=question, execution=root)

    retriever = execution_create(
        tenant=tenant,
        project=project,
        agent_type="retriever",
        parent=root,
        input_data={"query": question},
        model=MODEL,
    )
    execution_start(tenant=tenant, execution=retriever)
    # The retriever step searches: the search log records it with the run (execution=).
    results = chunk_search(tenant=tenant, query=question, k=4, mode="hybrid", execution=retriever)
    execution_record_sources(tenant=tenant, execution=retriever, results=results)
    execution_finish(
        tenant=tenant, execution=retriever, output_data={"chunks": len(results)}, **_usage(run)
    )

    writer = execution_create(
        tenant=tenant,
        project=project,
        agent_type="writer",
        parent=root,
        input_data={"document_type": DocumentType.SPECIFICATION},
        model=MODEL,
    )
    execution_start(tenant=tenant, execution=writer)
    current = latest_versions(tenant=tenant, project=project).get(DocumentType.SPECIFICATION)
    cited = "\n".join(f"- {result.content[:80]}" for result in results[:2])
    content = (current.content if current else "# Specification") + (
        f"\n\n## Retries and storage\n\nDrafted by the writer agent from:\n{cited}\n"
    )
    version = document_version_create(
        tenant=tenant,
        project=project,
        document_type=DocumentType.SPECIFICATION,
        content=content,
        metadata={"agent": "writer"},
    )
    execution_finish(
        tenant=tenant,
        execution=writer,
        produced_version=version,
        output_data={"version": version.version},
        **_usage(run),
    )
    execution_finish(tenant=tenant, execution=root, output_data={"steps": 2}, **_usage(run))
    message_add(
        tenant=tenant,
        project=project,
        role="agent",
        execution=root,
        content=f"I updated the specification to version {version.version}.",
    )
    evaluation_record(
        tenant=tenant,
        document_version=version,
        score=round(run.rng.uniform(60, 98), 1),
        metrics={"faithfulness": round(run.rng.uniform(0.6, 1), 2)},
        evaluator="demo-judge",
    )
    evaluation_record(
        tenant=tenant,
        execution=root,
        score=round(run.rng.uniform(50, 95), 1),
        metrics={"latency_ok": True},
        evaluator="demo-judge",
    )
    run.count("agent executions", 2)
    run.count("execution sources", len(results))
    run.count("conversation messages", 2)
    run.count("evaluation runs", 2)


# Failures of the planner's steps: (error type, message, what the retry does).
FAILURES = [
    ("RateLimitError", "the model provider answered 429 Too Many Requests", "backoff 30 s"),
    ("TimeoutError", "the model did not answer within 30 s", "retry with a smaller context"),
    (
        "ContextLengthError",
        "the prompt of 131072 tokens exceeds the model's 128000",
        "retry with the retrieved chunks summarised",
    ),
    (
        "OutputValidationError",
        "the model's answer is not valid JSON for the plan schema",
        "retry with a stricter output schema",
    ),
]
NODES = ["plan_outline", "retrieve_context", "draft_section", "validate_output"]


def _traceback(node: str, error_type: str, message: str, line: int) -> str:
    return (
        "Traceback (most recent call last):\n"
        '  File "/srv/agents/runtime/graph.py", line 212, in run_node\n'
        "    result = await node.invoke(state)\n"
        f'  File "/srv/agents/nodes/{node}.py", line {line}, in invoke\n'
        "    response = await self.client.complete(prompt, timeout=30)\n"
        '  File "/srv/agents/llm/client.py", line 88, in complete\n'
        "    raise error_from(response)\n"
        f"agents.llm.errors.{error_type}: {message}\n"
    )


def _fail(run: SeedRun, tenant, execution) -> tuple[str, str, str]:
    """Fail a running execution with one of FAILURES, recorded with its traceback."""
    error_type, message, strategy = run.rng.choice(FAILURES)
    node = run.rng.choice(NODES)
    execution_fail(
        tenant=tenant,
        execution=execution,
        error_type=error_type,
        error_message=message,
        node=node,
        traceback=_traceback(node, error_type, message, run.rng.randint(20, 400)),
    )
    run.count("execution errors")
    return error_type, message, strategy


def _failed_run(run: SeedRun, tenant, root, *, recovers: bool) -> None:
    """The planner fails; its retry (saying what it does differently) succeeds, which
    recovers the first failure, or fails as well, leaving both unrecovered."""
    _, _, strategy = _fail(run, tenant, root)
    retry = execution_retry(tenant=tenant, execution=root, recovery_strategy=strategy)
    execution_start(tenant=tenant, execution=retry)
    if recovers:
        execution_finish(tenant=tenant, execution=retry, **_usage(run))
    else:
        _fail(run, tenant, retry)
    run.count("agent executions")


# What agents and people decide for a project: (category, question, options with their
# notes, the reasoning for the first option, which is the one selected).
DECISIONS = [
    (
        "storage",
        "Where do the {topic} embeddings live?",
        [
            ("PostgreSQL with pgvector", "One database to run; HNSW index; row-level security."),
            ("A dedicated vector database", "Another system, and a second copy of tenant data."),
            ("An in-process index", "Lost on every restart; no tenant isolation."),
        ],
        "Vectors beside the rows they describe keep isolation and backups whole.",
    ),
    (
        "architecture",
        "How does {topic} run long agent steps?",
        [
            ("A worker queue", "Retries and backpressure; one more process to deploy."),
            ("Inside the web request", "Simplest; times out behind the load balancer."),
        ],
        "Agent steps take minutes; requests must answer in seconds.",
    ),
    (
        "testing",
        "What do the {topic} tests run against?",
        [
            ("The real PostgreSQL", "Catches row-level security and trigger mistakes."),
            ("SQLite", "Fast, but has neither row-level security nor pgvector."),
            ("Mocks of the database", "Fast, and proves nothing about the SQL."),
        ],
        "Isolation is enforced by PostgreSQL, so only PostgreSQL can test it.",
    ),
    (
        "retries",
        "How does {topic} retry a failed model call?",
        [
            ("Exponential backoff, 3 attempts", "Absorbs rate limits without a retry storm."),
            ("Immediately, until it works", "Turns one rate limit into many."),
        ],
        "Most failures are rate limits and timeouts, which waiting cures.",
    ),
]


def _editor(run: SeedRun, tenant, project):
    """A running editor agent, whose run records decisions and proposes a change."""
    editor = execution_create(
        tenant=tenant,
        project=project,
        agent_type="editor",
        model=MODEL,
        input_data={"goal": f"review the documents of {project.name}"},
    )
    run.count("agent executions")
    return execution_start(tenant=tenant, execution=editor)


def _decisions(run: SeedRun, tenant, project, owner, editor) -> None:
    """Two decisions: one the owner made, one the editor agent made."""
    topic = project.metadata.get("topic", "the product")
    for n, (category, question, options, reasoning) in enumerate(run.rng.sample(DECISIONS, 2)):
        decision_record(
            tenant=tenant,
            project=project,
            category=category,
            question=question.format(topic=topic),
            options=[{"name": name, "notes": notes} for name, notes in options],
            selected=options[0][0],
            reasoning=reasoning,
            execution=editor if n else None,
            decided_by=None if n else owner,
        )
        run.count("decisions")


# The status each project's proposal ends in, cycling: every status with 5 projects.
PROPOSAL_OUTCOMES = [
    ProposalStatus.PENDING,
    ProposalStatus.APPROVED,
    ProposalStatus.APPLIED,
    ProposalStatus.REJECTED,
    ProposalStatus.FAILED,
]


PROPOSALS_LOGGER = "agents.services.proposals"


@contextmanager
def _not_logged(name: str) -> Iterator[None]:
    """Drop the named logger's records in the block (and only there)."""
    logger = logging.getLogger(name)

    def drop(record: logging.LogRecord) -> bool:
        return False

    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def _proposal(run: SeedRun, tenant, project, owner, editor, outcome: str, index: int) -> None:
    """The editor proposes a revision of one of the project's documents (a real diff of
    its latest version); the owner reviews it and, if approved, applies it. A failed one
    met a concurrent edit: the owner wrote a version after the agent read its base."""
    document_type = DocumentType.values[index % len(DocumentType.values)]
    base = latest_versions(tenant=tenant, project=project)[document_type]
    topic = project.metadata.get("topic", "the product")
    lines = revise(run.rng, topic, base.content.split("\n"))
    proposal = change_proposal_propose(
        tenant=tenant,
        base_version=base,
        content="\n".join(lines),
        execution=editor,
        impact={
            "summary": f"Tightens the {document_type} for {topic}.",
            "risk": run.rng.choice(["low", "medium", "high"]),
            "documents": [document_type],
        },
    )
    run.count("change proposals")
    if outcome == ProposalStatus.PENDING:
        return
    if outcome == ProposalStatus.REJECTED:
        change_proposal_reject(
            tenant=tenant,
            proposal=proposal,
            by=owner,
            note="Drops an acceptance criterion; propose it again on top of the latest version.",
        )
        return
    change_proposal_approve(
        tenant=tenant, proposal=proposal, by=owner, note="The diff matches the sources."
    )
    if outcome == ProposalStatus.APPROVED:
        return
    if outcome == ProposalStatus.FAILED:
        document_version_create(
            tenant=tenant,
            project=project,
            document_type=document_type,
            content=base.content + "\n\nEdited by hand while the proposal was reviewed.\n",
            by=owner,
        )
        run.count("document versions")
    # A failed apply is the demo here, recorded on the proposal: not logged as the WARNING
    # a real one is, which read as a failure of the seed itself.
    expected_refusal = outcome == ProposalStatus.FAILED
    try:
        with _not_logged(PROPOSALS_LOGGER) if expected_refusal else nullcontext():
            change_proposal_apply(tenant=tenant, proposal=proposal, by=owner)
    except ValidationError:
        if not expected_refusal:
            raise
        run.count("change proposals failed on purpose (edited by hand first)")
    else:
        run.count("document versions")


def seed(run: SeedRun) -> None:
    projects = run.shared.get("projects", [])
    per_project = run.volumes["executions"]
    total = len(projects) * per_project
    owner = run.shared.get("owner")
    n = failed_runs = proposals = 0
    with run.progress("agent runs", total) as bar:
        for project in projects:
            tenant = project.tenant_id
            for _ in range(per_project):
                outcome = OUTCOMES[n % len(OUTCOMES)]
                n += 1
                root = execution_create(
                    tenant=tenant,
                    project=project,
                    agent_type="planner",
                    model=MODEL,
                    input_data={"goal": f"advance {project.name}"},
                )
                run.count("agent executions")
                if outcome == ExecutionStatus.PENDING:
                    bar.advance()
                    continue
                if outcome == ExecutionStatus.CANCELLED:
                    execution_cancel(tenant=tenant, execution=root)
                    bar.advance()
                    continue
                execution_start(tenant=tenant, execution=root)
                if outcome == ExecutionStatus.SUCCEEDED:
                    _successful_run(run, tenant, project, root)
                elif outcome == ExecutionStatus.FAILED:
                    _failed_run(run, tenant, root, recovers=failed_runs % 2 == 0)
                    failed_runs += 1
                bar.advance()
            if per_project:
                # An editor agent decides and proposes; the owner reviews.
                editor = _editor(run, tenant, project)
                _decisions(run, tenant, project, owner, editor)
                proposal_outcome = PROPOSAL_OUTCOMES[proposals % len(PROPOSAL_OUTCOMES)]
                _proposal(run, tenant, project, owner, editor, proposal_outcome, proposals)
                execution_finish(tenant=tenant, execution=editor, **_usage(run))
                proposals += 1
