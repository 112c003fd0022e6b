"""Project templates, and projects created from them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager

from django.core.exceptions import ValidationError

from core.validators import validate_storable_arguments
from documents import templating
from documents.models import (
    DocumentVersion,
    Project,
    ProjectTemplate,
    TemplateComplexity,
)
from documents.services.projects import project_create
from documents.services.versions import document_version_create
from tenancy.context import require_tenant, system_context, tenant_context
from tenancy.models import TenantRef, User


def _clean_names(value: Iterable[str] | None) -> list[str]:
    """A list of distinct non-blank strings, in the given order."""
    names: list[str] = []
    for item in value or ():
        item = str(item).strip()
        if item and item not in names:
            names.append(item)
    return names


def _validate_template_files(files: object, declared: set[str]) -> None:
    if not isinstance(files, dict) or not all(
        isinstance(name, str) and name and isinstance(text, str) for name, text in files.items()
    ):
        raise ValidationError({"files": "files must map file names to text."})
    errors = []
    types: dict[str, str] = {}
    for name, text in files.items():
        try:
            used = templating.placeholders(text)
        except ValueError as error:
            errors.append(f"{name}: {error}.")
            continue
        undeclared = sorted(set(used) - declared - set(templating.BUILTIN_VARIABLES))
        if undeclared:
            errors.append(f"{name}: undeclared variables {', '.join(undeclared)}.")
        document_type = templating.document_type_for(name)
        if document_type in types:
            errors.append(f"{name} and {types[document_type]} both become the {document_type}.")
        elif document_type:
            types[document_type] = name
    if errors:
        raise ValidationError({"files": errors})


def project_template_create(
    *,
    tenant: TenantRef | None = None,
    name: str,
    files: dict[str, str],
    description: str = "",
    required_variables: Sequence[str] = (),
    optional_variables: Sequence[str] = (),
    tech_stack: Sequence[str] = (),
    tags: Sequence[str] = (),
    complexity: str = TemplateComplexity.SIMPLE,
    setup_minutes: int = 0,
) -> ProjectTemplate:
    """A template of `tenant`, or with tenant=None a template shared by all tenants.

    Files map a file name to text with `{variable}` placeholders; "about.md",
    "specification.md", "architecture.md" and "plan.md" (any extension) become the
    project's first document versions. Every placeholder must be declared (or be
    `project_name`). Shared templates are written by system jobs: tenant=None runs
    in system_context, so not inside a transaction of the runtime role.
    """
    required = _clean_names(required_variables)
    optional = _clean_names(optional_variables)
    errors = {}
    bad = [n for n in required + optional if not templating.VARIABLE_NAME_RE.match(n)]
    if bad:
        errors["required_variables"] = f"Not valid variable names: {', '.join(bad)}."
    reserved = sorted(set(required + optional) & set(templating.BUILTIN_VARIABLES))
    if reserved:
        errors["required_variables"] = f"Always provided, not declarable: {', '.join(reserved)}."
    both = sorted(set(required) & set(optional))
    if both:
        errors["optional_variables"] = f"Both required and optional: {', '.join(both)}."
    if errors:
        raise ValidationError(errors)
    _validate_template_files(files, set(required + optional))
    template = ProjectTemplate(
        tenant_id=getattr(tenant, "pk", tenant),
        name=name,
        description=description,
        files=files,
        required_variables=required,
        optional_variables=optional,
        tech_stack=_clean_names(tech_stack),
        tags=_clean_names(tags),
        complexity=complexity,
        setup_minutes=setup_minutes,
    )
    scope: AbstractContextManager[object]
    if tenant is None:
        scope = system_context(f"project_template_create: shared template {name!r}")
    else:
        scope = tenant_context(require_tenant(tenant))
    with scope:
        template.full_clean()
        template.save()
    return template


def _template_variables(template: ProjectTemplate, variables: dict) -> dict[str, str]:
    """The template's variables filled from `variables`, refusing missing and unknown ones."""
    if not isinstance(variables, dict):
        raise ValidationError({"variables": "variables must be a dict of names to values."})
    validate_storable_arguments(variables=variables)
    given = {name: value for name, value in variables.items() if value not in (None, "")}
    declared = set(template.required_variables) | set(template.optional_variables)
    errors = []
    missing = [name for name in template.required_variables if name not in given]
    if missing:
        errors.append(f"Missing required variables: {', '.join(missing)}.")
    unknown = sorted(str(name) for name in variables if name not in declared)
    if unknown:
        errors.append(f"Unknown variables: {', '.join(unknown)}.")
    if errors:
        raise ValidationError({"variables": errors})
    return {name: str(given.get(name, "")) for name in sorted(declared)}


def project_create_from_template(
    *,
    tenant: TenantRef,
    template: ProjectTemplate,
    name: str,
    variables: dict,
    by: User | None = None,
    language: str = "en",
) -> Project:
    """A new project whose documents are the template's files rendered with `variables`.

    Files named after a document type become version 1 of that document; the others
    are kept, rendered, in project.metadata["template"]["files"]. Missing required
    and unknown variables are refused (ValidationError on "variables"); missing
    optional ones render as empty text. All or nothing.
    """
    tenant_id = require_tenant(tenant)
    if template.tenant_id not in (None, tenant_id):
        raise ValidationError({"template": "template belongs to another tenant."})
    values = _template_variables(template, variables)
    context = {**values, "project_name": name}
    documents, other_files = {}, {}
    for file_name, text in sorted(template.files.items()):
        rendered = templating.render(text, context)
        document_type = templating.document_type_for(file_name)
        if document_type:
            documents[document_type] = rendered
        else:
            other_files[file_name] = rendered
    metadata = {
        "template": {
            "id": str(template.pk),
            "name": template.name,
            "variables": values,
            "files": other_files,
        }
    }
    with tenant_context(tenant_id):
        project = project_create(
            tenant=tenant_id, name=name, by=by, language=language, metadata=metadata
        )
        for document_type in DocumentVersion.DocumentType.values:
            if document_type in documents:
                document_version_create(
                    tenant=tenant_id,
                    project=project,
                    document_type=document_type,
                    content=documents[document_type],
                    by=by,
                    metadata={"source": "template", "template_id": str(template.pk)},
                )
    return project
