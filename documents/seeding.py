"""Seeds projects in every status and step, with version histories that have real diffs,
and knowledge documents split into embedded chunks."""

from __future__ import annotations

import random

from django.core.files.storage import storages

from core.files import delete_tree
from core.seed_runner import SeedRun, Volume
from documents.models import Document, DocumentType, ProjectStatus
from documents.services import document_ingest, document_version_create, project_create

# Every project gets at least one version of each document type, so agent runs and
# exports always have something to work on.
VOLUMES = {
    "projects": Volume(8, 0, 10_000, "projects per tenant (8 cover every status and step)"),
    "versions": Volume(3, 1, 100, "versions of each document type per project"),
    "documents": Volume(3, 0, 10_000, "knowledge documents per tenant"),
    "chunks": Volume(8, 0, 100_000, "chunks per knowledge document"),
}
LANGUAGES = ["en", "de", "pt-BR", "fr", "es"]
TOPICS = [
    "billing",
    "onboarding",
    "search",
    "notifications",
    "analytics",
    "permissions",
    "exports",
    "retrieval",
    "embeddings",
    "audit",
    "scheduling",
    "payments",
]
WORDS = [
    "agent",
    "tenant",
    "document",
    "version",
    "chunk",
    "index",
    "latency",
    "cache",
    "policy",
    "queue",
    "retry",
    "schema",
    "vector",
    "summary",
    "review",
    "deploy",
    "metric",
    "budget",
    "owner",
    "storage",
    "migration",
    "trigger",
    "export",
    "prompt",
]
SECTION_TITLES: dict[str, list[str]] = {
    DocumentType.ABOUT: ["Problem", "Audience", "Goals"],
    DocumentType.SPECIFICATION: ["Requirements", "Constraints", "Acceptance"],
    DocumentType.ARCHITECTURE: ["Components", "Data model", "Operations"],
    DocumentType.PLAN: ["Milestones", "Risks", "Staffing"],
}


def sentence(rng: random.Random, topic: str) -> str:
    words = rng.sample(WORDS, 6)
    return (
        f"The {topic} {words[0]} keeps every {words[1]} {words[2]} near the {words[3]} "
        f"so the {words[4]} {words[5]} stays predictable."
    )


def initial_document(rng: random.Random, topic: str, document_type: str) -> list[str]:
    lines = [f"# {document_type.title()}: {topic}", ""]
    for title in SECTION_TITLES[document_type]:
        lines += [f"## {title}", "", sentence(rng, topic), sentence(rng, topic), ""]
    return lines


def revise(rng: random.Random, topic: str, lines: list[str]) -> list[str]:
    """A plausible edit: rewrite one sentence and append another (a real diff)."""
    revised = list(lines)
    sentences = [i for i, line in enumerate(revised) if line.startswith("The ")]
    revised[rng.choice(sentences)] = sentence(rng, topic)
    revised += [sentence(rng, topic), ""]
    return revised


# Knowledge documents are cut into chunks of CHUNK_SIZE tokens overlapping by
# CHUNK_OVERLAP, so `--chunks N` gives exactly N chunks per document.
CHUNK_SIZE, CHUNK_OVERLAP = 40, 8


def knowledge_text(rng: random.Random, topic: str, chunks: int) -> str:
    tokens_needed = CHUNK_SIZE + (chunks - 1) * (CHUNK_SIZE - CHUNK_OVERLAP)
    tokens: list[str] = []
    while len(tokens) < tokens_needed:
        tokens += sentence(rng, topic).split()
    return " ".join(tokens[:tokens_needed])


def seed_knowledge(run: SeedRun, projects_by_tenant: dict) -> None:
    per_tenant, chunks = run.volumes["documents"], run.volumes["chunks"]
    if not chunks:
        return
    tenants, owner, rng = run.shared["tenants"], run.shared["owner"], run.rng
    with run.progress("knowledge documents", len(tenants) * per_tenant) as bar:
        for tenant in tenants:
            projects = projects_by_tenant.get(tenant.pk) or [None]
            for n in range(per_tenant):
                topic = TOPICS[n % len(TOPICS)]
                document = document_ingest(
                    tenant=tenant,
                    title=f"{topic.title()} handbook",
                    by=owner,
                    text=knowledge_text(rng, topic, chunks),
                    project=projects[n % len(projects)],
                    metadata={"topic": topic, "seeded": True},
                    chunk_size=CHUNK_SIZE,
                    chunk_overlap=CHUNK_OVERLAP,
                )
                if document.status != Document.Status.READY:
                    raise RuntimeError(f"seeding {document.title} failed: {document.error_message}")
                run.count("knowledge documents")
                run.count("chunks", chunks)
                bar.advance()


def seed(run: SeedRun) -> None:
    seed_projects(run)
    projects_by_tenant: dict = {}
    for project in run.shared["projects"]:
        projects_by_tenant.setdefault(project.tenant_id, []).append(project)
    seed_knowledge(run, projects_by_tenant)


def cleanup(run: SeedRun) -> None:
    """After a failed seed: remove the uploads the rolled-back rows pointed at."""
    for tenant in run.shared.get("tenants", []):
        delete_tree(storages["default"], f"documents/{tenant.pk}")


def seed_projects(run: SeedRun) -> None:
    tenants, owner, rng = run.shared["tenants"], run.shared["owner"], run.rng
    per_tenant, versions = run.volumes["projects"], run.volumes["versions"]
    statuses = list(ProjectStatus.values)
    projects = []
    total = len(tenants) * per_tenant
    with run.progress("projects", total) as bar:
        for tenant in tenants:
            for i in range(per_tenant):
                topic = rng.choice(TOPICS)
                project = project_create(
                    tenant=tenant,
                    name=f"{topic.title()} service #{i + 1}",
                    by=owner,
                    status=statuses[i % len(statuses)],
                    current_step=(i + i // len(statuses)) % 4 + 1,
                    language=rng.choice(LANGUAGES),
                    metadata={"topic": topic, "seeded": True},
                )
                projects.append(project)
                for document_type in DocumentType.values:
                    lines = initial_document(rng, topic, document_type)
                    for n in range(versions):
                        if n:
                            lines = revise(rng, topic, lines)
                        document_version_create(
                            tenant=tenant,
                            project=project,
                            document_type=document_type,
                            content="\n".join(lines),
                            by=owner,
                            metadata={"words": sum(len(line.split()) for line in lines)},
                            readability_score=round(rng.uniform(40, 95), 1),
                            grammar_score=round(rng.uniform(60, 100), 1),
                        )
                        run.count("document versions")
                run.count("projects")
                bar.advance()
    run.shared["projects"] = projects
