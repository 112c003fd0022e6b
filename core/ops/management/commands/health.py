"""`health`: run /health/'s checks from the command line (`make health`).

One line per check, its key (the JSON answer's) and OK or what is wrong; exit status 0
when all pass, 1 otherwise.
"""

from django.core.management.base import BaseCommand, CommandError

from core.ops.health import run_checks


class Command(BaseCommand):
    help = "Run the /health/ checks; exit 0 when healthy, 1 otherwise."

    # Report health even when a system check fails: this command is how one finds out why.
    requires_system_checks = []

    def handle(self, *args, **options) -> None:
        results = run_checks()
        for result in results:
            self.stdout.write(f"{result.check.key}: {result.error or result.check.pretty_status()}")
        failed = [result.check.key for result in results if result.error]
        if failed:
            raise CommandError(f"unhealthy: {', '.join(failed)}", returncode=1)
