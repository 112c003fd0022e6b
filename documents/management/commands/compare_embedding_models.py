"""`manage.py compare_embedding_models --tenant SLUG --model M [--sample N] [--k K]`."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand

from documents.management.tenants import refusal, tenant_option
from documents.model_comparison import compare_models

FIELDS = {"tenant": "--tenant", "model": "--model", "sample": "--sample", "k": "--k"}


class Command(BaseCommand):
    help = (
        "Run a tenant's last logged searches (those that kept their text) with its current "
        "embedding model and with --model, and print the overlap@k of their answers and both "
        "models' latencies, to decide a switch."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", required=True, help="Tenant slug or id.")
        parser.add_argument("--model", required=True, help="The model to compare with.")
        parser.add_argument("--sample", type=int, default=50, help="Logged queries (default 50).")
        parser.add_argument("--k", type=int, default=10, help="Results per search (default 10).")

    def handle(self, *args, **options) -> None:
        tenant = tenant_option(options["tenant"])
        try:
            result = compare_models(
                tenant=tenant, model=options["model"], sample=options["sample"], k=options["k"]
            )
        except ValidationError as error:
            raise refusal(error, FIELDS) from error
        k = result.k
        self.stdout.write(
            f"Tenant {tenant.slug}: {result.current} (current) against {result.other}, "
            f"{result.queries} logged quer{'y' if result.queries == 1 else 'ies'}, k={k}."
        )
        self.stdout.write(
            f"overlap@{k}: mean {result.overlap_mean:.3f}, min {result.overlap_min:.3f}"
        )
        self.stdout.write(f"  {'latency (ms)':<24} {'p50':>8} {'p95':>8}")
        for model in (result.current, result.other):
            self.stdout.write(
                f"  {model:<24} {result.latency(model, 50):>8.2f} {result.latency(model, 95):>8.2f}"
            )
