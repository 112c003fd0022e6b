"""Admin for projects, document versions, knowledge documents, chunks, project templates
the search log, and the embedding models of each tenant.

Rights: tenancy.admin_roles. New rows go through documents.services, which compute what a form
should not ask for (version numbers and hash chains, stored files and their checksums,
validated template placeholders), attributed to the user who adds them. One module per
model family; importing this package registers them all. The apps to the right (agents,
exports) add their sections and actions to a project's page, and their panels to a
version's and a knowledge document's page, through the names below.
"""

from documents.admin import (
    access,
    embedding_models,
    knowledge,
    project_templates,
    projects,
    search_log,
    versions,
)
from documents.admin.knowledge import add_document_panels
from documents.admin.projects import add_project_action, add_project_sections
from documents.admin.versions import add_version_panels, diff_html, version_label

__all__ = [
    "access",
    "embedding_models",
    "add_document_panels",
    "add_project_action",
    "add_project_sections",
    "add_version_panels",
    "diff_html",
    "knowledge",
    "project_templates",
    "projects",
    "search_log",
    "version_label",
    "versions",
]
