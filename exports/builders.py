"""Export file builders: pure functions from a manifest and document versions to bytes.

The same inputs always give the same bytes (sorted JSON keys, documents in the
canonical type order, fixed timestamps and attributes in zip entries), so an export
can be rebuilt and compared by checksum.

Layouts, each carrying the manifest:
- zip: one `<type>.md` file per document (its content, unchanged) and `manifest.json`;
- markdown: the manifest as JSON front matter, then one section per document whose
  text sits between `<!-- document: <type> -->` and `<!-- /document: <type> -->` lines;
- json: `{"manifest": ..., "documents": [{"type", "version", "content_sha256", "content"}]}`.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Sequence
from datetime import datetime

from documents.models import DocumentType, DocumentVersion
from exports.models import ExportFormat

MANIFEST_VERSION = 1
MANIFEST_FILENAME = "manifest.json"
EXTENSIONS = {ExportFormat.ZIP: "zip", ExportFormat.MARKDOWN: "md", ExportFormat.JSON: "json"}
CONTENT_TYPES = {
    ExportFormat.ZIP: "application/zip",
    ExportFormat.MARKDOWN: "text/markdown; charset=utf-8",
    ExportFormat.JSON: "application/json",
}
# The earliest time a zip entry can carry: no build time leaks into the archive.
ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)


def ordered_versions(versions: dict[str, DocumentVersion]) -> list[DocumentVersion]:
    """The versions in the canonical document order (about, specification, architecture, plan)."""
    return [versions[kind] for kind in DocumentType.values if kind in versions]


def document_filename(document_type: str) -> str:
    return f"{document_type}.md"


def build_manifest(
    *,
    export_id,
    export_format: str,
    created_at: datetime,
    project_id,
    project_name: str,
    versions: Sequence[DocumentVersion],
) -> dict:
    return {
        "manifest_version": MANIFEST_VERSION,
        "export_id": str(export_id),
        "format": export_format,
        "created_at": created_at.isoformat(),
        "project_id": str(project_id),
        "project_name": project_name,
        "documents": [
            {
                "type": version.document_type,
                "version": version.version,
                "version_id": str(version.pk),
                "content_sha256": version.content_sha256,
            }
            for version in versions
        ],
    }


def _json_bytes(value) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def _zip_entry(name: str) -> zipfile.ZipInfo:
    entry = zipfile.ZipInfo(name, date_time=ZIP_TIMESTAMP)
    entry.compress_type = zipfile.ZIP_DEFLATED
    entry.create_system = 3  # Unix, whatever the building machine
    entry.external_attr = 0o100644 << 16  # a regular file, rw-r--r--
    return entry


def build_zip(*, manifest: dict, versions: Sequence[DocumentVersion]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for version in versions:
            archive.writestr(
                _zip_entry(document_filename(version.document_type)), version.content.encode()
            )
        archive.writestr(_zip_entry(MANIFEST_FILENAME), _json_bytes(manifest))
    return buffer.getvalue()


def _one_line(text: str) -> str:
    return " ".join(text.split())


def build_markdown(*, manifest: dict, versions: Sequence[DocumentVersion]) -> bytes:
    labels = dict(DocumentType.choices)
    parts = [
        "---\n",
        json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False),
        "\n---\n\n",
        f"# {_one_line(manifest['project_name'])}\n",
    ]
    for version in versions:
        kind = version.document_type
        parts += [
            f"\n## {labels[kind]} (version {version.version})\n\n",
            f"<!-- document: {kind} -->\n",
            version.content,
            f"\n<!-- /document: {kind} -->\n",
        ]
    return "".join(parts).encode()


def build_json(*, manifest: dict, versions: Sequence[DocumentVersion]) -> bytes:
    documents = [
        {
            "type": version.document_type,
            "version": version.version,
            "content_sha256": version.content_sha256,
            "content": version.content,
        }
        for version in versions
    ]
    return _json_bytes({"manifest": manifest, "documents": documents})


BUILDERS = {
    ExportFormat.ZIP: build_zip,
    ExportFormat.MARKDOWN: build_markdown,
    ExportFormat.JSON: build_json,
}


def build_file(export_format: str, *, manifest: dict, versions: Sequence[DocumentVersion]) -> bytes:
    return BUILDERS[ExportFormat(export_format)](manifest=manifest, versions=versions)
