"""`manage.py audit_seal [--tenant SLUG]`: seal the audit trail's committed events."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from tenancy.audit import audit_seal


class Command(BaseCommand):
    help = (
        "Seal the audit trail's committed unsealed events into their hash chains, every "
        "tenant's and the global one, or one tenant's (docs/security.md, 'The hash "
        "chain'). Run it every minute (cron), as the owner; idempotent. Prints how many "
        "events each chain got."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", metavar="SLUG", help="seal this tenant's chain only")

    def handle(self, *args, **options) -> None:
        try:
            result = audit_seal(tenant_slug=options["tenant"])
        except ValidationError as error:
            raise CommandError(f"--tenant: {' '.join(error.message_dict['tenant'])}") from error
        self.stdout.write("\n".join(result.report()))
