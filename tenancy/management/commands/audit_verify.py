"""`manage.py audit_verify [--tenant SLUG]`: verify the audit trail's hash chains."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from tenancy.audit import audit_verify


class Command(BaseCommand):
    help = (
        "Seal, then verify the audit trail: every tenant's hash chain and the global one, "
        "or one tenant's (docs/security.md, 'Audit trail'). Exits 0 when every chain "
        "verifies (naming the events left unsealed, in flight during the seal, if any); "
        "otherwise names the first broken event of each broken chain and exits 1."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", metavar="SLUG", help="verify this tenant's chain only")

    def handle(self, *args, **options) -> None:
        try:
            result = audit_verify(tenant_slug=options["tenant"])
        except ValidationError as error:
            raise CommandError(f"--tenant: {' '.join(error.message_dict['tenant'])}") from error
        lines = result.report()
        if not result.ok:
            self.stderr.write("\n".join(lines))
            raise CommandError("the audit trail does not verify: see the broken chains above")
        self.stdout.write("\n".join(lines))
