"""`manage.py embedding_models --tenant SLUG`: a tenant's models and backfill progress."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand

from documents.management.tenants import refusal, tenant_option
from documents.services import embedding_models_status


class Command(BaseCommand):
    help = (
        "Show the embedding models of a tenant: which one its searches use (current), which "
        "one it can roll back to (previous), the others it keeps, each backfill's progress "
        "and the state of each model's index (docs/operations.md, 'Switching embedding models')."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", required=True, help="Tenant slug or id.")

    def handle(self, *args, **options) -> None:
        tenant = tenant_option(options["tenant"])
        try:
            states = embedding_models_status(tenant=tenant)
        except ValidationError as error:
            raise refusal(error, {"tenant": "--tenant"}) from error
        self.stdout.write(f"Embedding models of tenant {tenant.slug}:")
        self.stdout.write(
            f"  {'model':<24} {'role':<9} {'backfill':<9} {'chunks':>15}  {'index':<8} error"
        )
        for state in states:
            chunks = f"{state.chunks_done}/{state.chunks_total}"
            self.stdout.write(
                f"  {state.model:<24} {state.role:<9} {state.status:<9} {chunks:>15}  "
                f"{state.index or 'none':<8} {state.error_message}".rstrip()
            )
