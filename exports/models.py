"""Export jobs and the files they produce."""

import pgtrigger
from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.db.models.expressions import RawSQL

from core.files import StoredFile
from core.hashing import SHA256_HEX_PATTERN
from core.models import JSONField, related_label
from documents.models import project_live_trigger
from tenancy.models import TenantForeignKey, TenantOwnedModel


class ExportStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    EXPIRED = "expired", "Expired"


class ExportFormat(models.TextChoices):
    ZIP = "zip", "Zip of Markdown files"
    MARKDOWN = "markdown", "Single Markdown file"
    JSON = "json", "JSON"


class Export(TenantOwnedModel):
    """A file built from a project's latest document versions."""

    Status = ExportStatus
    # A completed export's file (an expired one's is gone, a running one's unfinished).
    STORED_FILE = StoredFile(storage="exports", condition=Q(status=ExportStatus.COMPLETED))

    Format = ExportFormat

    project = TenantForeignKey(
        "documents.Project",
        on_delete=models.CASCADE,
        related_name="exports",
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    format = models.CharField(max_length=16, choices=Format.choices, default=Format.ZIP)
    storage_key = models.CharField(max_length=500, blank=True)
    manifest = JSONField(default=dict, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    expires_at = models.DateTimeField(
        db_default=RawSQL("now() + interval '24 hours'", [], output_field=models.DateTimeField())
    )
    download_count = models.IntegerField(default=0, validators=[MinValueValidator(0)])
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta(TenantOwnedModel.Meta):
        db_table = "exports"
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=ExportStatus.values), name="exports_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(format__in=ExportFormat.values), name="exports_format_valid"
            ),
            models.CheckConstraint(
                condition=Q(download_count__gte=0), name="exports_download_count_gte_0"
            ),
            models.CheckConstraint(condition=Q(size_bytes__gte=0), name="exports_size_gte_0"),
            models.CheckConstraint(
                condition=Q(sha256="") | Q(sha256__regex=SHA256_HEX_PATTERN),
                name="exports_sha256_hex",
            ),
            # A completed export points at its file.
            models.CheckConstraint(
                condition=~Q(status="completed")
                | (~Q(storage_key="") & ~Q(sha256="") & Q(completed_at__isnull=False)),
                name="exports_completed_has_file",
            ),
        ]
        indexes = [
            # A project's exports.
            models.Index(fields=["project"], name="exports_project_idx"),
            # Purge: completed exports past their expiry.
            models.Index(
                fields=["expires_at"],
                name="exports_completed_expiry_idx",
                condition=Q(status="completed"),
            ),
            # Purge: builds that died pending or running, past their expiry (few rows).
            models.Index(
                fields=["expires_at"],
                name="exports_unfinished_expiry_idx",
                condition=Q(status__in=["pending", "running"]),
            ),
            # Tenant-first access and the (tenant_id, project_id) foreign key.
            models.Index(fields=["tenant", "project"], name="exports_tenant_project_idx"),
            models.Index(fields=["created_by"], name="exports_creator_idx"),
            GinIndex(fields=["manifest"], name="exports_manifest_gin"),
        ]
        triggers = [
            *TenantOwnedModel.Meta.triggers,
            project_live_trigger(),
            # Building (running) and finishing (completed) are writes of the project's
            # export too: a build the project's deletion overtook cannot complete.
            project_live_trigger(
                "project_live_build",
                operation=pgtrigger.Update,
                condition="NEW.status IN ('running', 'completed') "
                "AND OLD.status IS DISTINCT FROM NEW.status",
            ),
        ]

    def __str__(self) -> str:
        return f"{related_label(self, 'project')} {self.format} export ({self.status})"
