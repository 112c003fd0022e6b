"""`manage.py switch_embedding_model --tenant SLUG (--model M | --rollback | --forget M)`."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand

from documents.management.tenants import refusal, tenant_option
from documents.services import (
    embedding_model_forget,
    embedding_model_rollback,
    embedding_model_switch,
)

FIELDS = {"tenant": "--tenant", "model": "--model"}


class Command(BaseCommand):
    help = (
        "Switch a tenant's searches to another embedding model once its backfill is complete "
        "(--model), back to the model used before (--rollback), or stop keeping a model's "
        "vectors (--forget M; prune_embeddings then deletes them)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", required=True, help="Tenant slug or id.")
        action = parser.add_mutually_exclusive_group(required=True)
        action.add_argument("--model", help="The model to search with from now on.")
        action.add_argument(
            "--rollback", action="store_true", help="Search with the previous model again."
        )
        action.add_argument("--forget", metavar="MODEL", help="Stop keeping MODEL's vectors.")

    def handle(self, *args, **options) -> None:
        tenant = tenant_option(options["tenant"])
        try:
            if options["rollback"]:
                model = embedding_model_rollback(tenant=tenant)
                message = f"Tenant {tenant.slug} searches with {model} again."
            elif options["forget"]:
                embedding_model_forget(tenant=tenant, model=options["forget"])
                message = (
                    f"Tenant {tenant.slug} no longer keeps {options['forget']} vectors; "
                    "`manage.py prune_embeddings` deletes them."
                )
            else:
                embedding_model_switch(tenant=tenant, model=options["model"])
                message = (
                    f"Tenant {tenant.slug} searches with {options['model']}; "
                    "`--rollback` goes back."
                )
        except ValidationError as error:
            fields = {**FIELDS, "model": "--forget" if options["forget"] else "--model"}
            if options["rollback"]:
                fields["model"] = "--rollback"
            raise refusal(error, fields) from error
        self.stdout.write(self.style.SUCCESS(message))
