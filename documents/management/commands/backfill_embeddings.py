"""`manage.py backfill_embeddings --tenant SLUG --model M [--now]`."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand

from documents.embeddings import default_model
from documents.management.tenants import refusal, tenant_option
from documents.services import (
    BACKFILL_TASK,
    REEMBED_TASK,
    BackfillProgress,
    ReembedProgress,
    chunks_reembed,
    embedding_backfill_start,
    embeddings_backfill,
)
from tenancy.context import job_scope

FIELDS = {"tenant": "--tenant", "model": "--model", "batch_size": "--batch-size"}


class Command(BaseCommand):
    help = (
        "Backfill a tenant's chunks with the vectors of another embedding model (one of "
        "EMBEDDING_MODELS): queues the worker's job, which builds the model's index "
        "concurrently and embeds the chunks in batches, resuming where it stopped. From now "
        "on the tenant's new chunks get the model's vectors too. --now runs the backfill in "
        "this process instead of the worker. Progress: `manage.py embedding_models`. "
        "EMBEDDER's own model, once the tenant forgot it, is backfilled by the re-embedding "
        "job, which fills chunks.embedding again."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", required=True, help="Tenant slug or id.")
        parser.add_argument(
            "--model",
            required=True,
            help="A model of EMBEDDING_MODELS, or EMBEDDER's once forgotten.",
        )
        parser.add_argument(
            "--now", action="store_true", help="Run the backfill here, not on the worker."
        )

    def handle(self, *args, **options) -> None:
        tenant = tenant_option(options["tenant"])

        def report(progress: BackfillProgress | ReembedProgress) -> None:
            if options["verbosity"] > 1:
                self.stdout.write(f"  {progress.chunks} chunk(s), {progress.batches} batch(es)")

        try:
            row = embedding_backfill_start(tenant=tenant, model=options["model"])
            if options["now"]:
                if row.model == default_model():
                    with job_scope(REEMBED_TASK, tenant):
                        count = chunks_reembed(tenant=tenant, on_batch=report)
                else:
                    with job_scope(BACKFILL_TASK, tenant):
                        count = embeddings_backfill(tenant=tenant, model=row.model, on_batch=report)
                self.stdout.write(
                    self.style.SUCCESS(
                        f"Backfilled {count} chunk(s) of tenant {tenant.slug} with {row.model}."
                    )
                )
                return
        except ValidationError as error:
            raise refusal(error, FIELDS) from error
        self.stdout.write(
            self.style.SUCCESS(
                f"Queued the backfill of {row.model} for tenant {tenant.slug}; follow it with "
                f"`manage.py embedding_models --tenant {tenant.slug}`."
            )
        )
