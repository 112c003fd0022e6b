"""Seeds agent runs in every status: steps, retries, retrieved sources, a produced
version, the conversation around it and evaluations."""

from __future__ import annotations

from decimal import Decimal

from agents.models import ExecutionStatus
from agents.services import (
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
from core.seed_runner import SeedRun
from documents.models import DocumentType
from documents.selectors import chunk_search, latest_versions
from documents.services import document_version_create

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
    results = chunk_search(tenant=tenant, query=question, k=4, mode="hybrid")
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


def seed(run: SeedRun) -> None:
    projects = run.shared.get("projects", [])
    per_project = run.volumes["executions"]
    total = len(projects) * per_project
    n = 0
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
                    execution_fail(
                        tenant=tenant,
                        execution=root,
                        error_type="RateLimitError",
                        error_message="the model provider answered 429; retried",
                    )
                    retry = execution_retry(tenant=tenant, execution=root)
                    execution_start(tenant=tenant, execution=retry)
                    execution_finish(tenant=tenant, execution=retry, **_usage(run))
                    run.count("agent executions")
                bar.advance()
