"""`manage.py reembed_chunks --tenant T [--embedder PATH --model NAME --dimension N]`."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from documents.embedding import get_embedder
from documents.management.tenants import tenant_option
from documents.models import EMBEDDING_DIMENSION
from documents.services import (
    REEMBED_BATCH_SIZE,
    REEMBED_MAX_BATCH_SIZE,
    REEMBED_TASK,
    ReembedProgress,
    chunks_reembed,
)
from tenancy.context import job_scope


class Command(BaseCommand):
    help = (
        "Re-embed the chunks of one tenant not yet embedded by the model of the EMBEDDER "
        "setting or of the embedder given by --embedder/--model/--dimension. Each batch "
        "commits on its own, and chunks added during the run are re-embedded too; an "
        "interrupted run started again carries on where it stopped."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", required=True, help="Tenant slug or id.")
        parser.add_argument(
            "--embedder",
            help="Dotted path to a callable list[str] -> list[list[float]] "
            "(default: the EMBEDDER setting).",
        )
        parser.add_argument("--model", help="Model name stored with each vector (with --embedder).")
        parser.add_argument(
            "--dimension",
            type=int,
            help=f"Size of the vectors (with --embedder; default {EMBEDDING_DIMENSION}).",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=REEMBED_BATCH_SIZE,
            help=f"Chunks per transaction (default {REEMBED_BATCH_SIZE}).",
        )

    def handle(self, *args, **options) -> None:
        tenant = tenant_option(options["tenant"])
        embedder = self._embedder(options["embedder"], options["model"], options["dimension"])
        if not 1 <= options["batch_size"] <= REEMBED_MAX_BATCH_SIZE:
            raise CommandError(
                f"--batch-size must be from 1 to {REEMBED_MAX_BATCH_SIZE}, "
                f"not {options['batch_size']}."
            )

        def report(progress: ReembedProgress) -> None:
            if options["verbosity"] > 1:
                self.stdout.write(f"  {progress.chunks} chunk(s), {progress.batches} batch(es)")

        try:
            # As the worker's job: a context without a user sees open rows only, and the
            # chunks of restricted documents would keep the old model.
            with job_scope(REEMBED_TASK, tenant):
                count = chunks_reembed(
                    tenant=tenant,
                    embedder=embedder,
                    batch_size=options["batch_size"],
                    on_batch=report,
                )
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from error
        self.stdout.write(
            self.style.SUCCESS(
                f"Re-embedded {count} chunk(s) of tenant {tenant.slug} with {embedder.model}."
            )
        )

    @staticmethod
    def _embedder(path: str | None, model: str | None, dimension: int | None):
        if path is None:
            if model or dimension is not None:
                raise CommandError("--model and --dimension need --embedder.")
            return get_embedder()
        if not model:
            raise CommandError("--embedder needs --model, the name stored with each vector.")
        dimension = EMBEDDING_DIMENSION if dimension is None else dimension
        if dimension != EMBEDDING_DIMENSION:
            raise CommandError(
                f"--dimension {dimension} does not fit chunks.embedding, which holds "
                f"{EMBEDDING_DIMENSION}-dimensional vectors."
            )
        try:
            return get_embedder({"CALLABLE": path, "MODEL": model, "DIMENSION": dimension})
        except ImportError as error:
            raise CommandError(f"Cannot import the embedder {path!r}: {error}") from error
