"""Seeds projects in every status and step, with version histories that have real diffs,
and knowledge documents split into embedded chunks."""

from __future__ import annotations

import random

from core.seed_runner import SeedRun
from documents.models import DocumentType, ProjectStatus
from documents.services import document_version_create, project_create

LANGUAGES = ["en", "de", "pt-BR", "fr", "es"]
TOPICS = [
    "billing", "onboarding", "search", "notifications", "analytics", "permissions",
    "exports", "retrieval", "embeddings", "audit", "scheduling", "payments",
]
WORDS = [
    "agent", "tenant", "document", "version", "chunk", "index", "latency", "cache",
    "policy", "queue", "retry", "schema", "vector", "summary", "review", "deploy",
    "metric", "budget", "owner", "storage", "migration", "trigger", "export", "prompt",
]
SECTION_TITLES = {
    DocumentType.ABOUT: ["Problem", "Audience", "Goals"],
    DocumentType.SPECIFICATION: ["Requirements", "Constraints", "Acceptance"],
    DocumentType.ARCHITECTURE: ["Components", "Data model", "Operations"],
    DocumentType.PLAN: ["Milestones", "Risks", "Staffing"],
}


def sentence(rng: random.Random, topic: str) -> str:
    words = rng.sample(WORDS, 6)
    return f"The {topic} {words[0]} keeps every {words[1]} {words[2]} near the {words[3]} " \
           f"so the {words[4]} {words[5]} stays predictable."


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


def seed(run: SeedRun) -> None:
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
                            tenant=tenant, project=project, document_type=document_type,
                            content="\n".join(lines), by=owner,
                            metadata={"words": sum(len(line.split()) for line in lines)},
                            readability_score=round(rng.uniform(40, 95), 1),
                            grammar_score=round(rng.uniform(60, 100), 1),
                        )
                        run.count("document versions")
                run.count("projects")
                bar.advance()
    run.shared["projects"] = projects
