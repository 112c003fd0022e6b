"""The README's services example runs as the README says, so it cannot rot."""

import re
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

README = Path(__file__).resolve().parents[2] / "README.md"


def python_examples(section: str) -> list[str]:
    """The ```python blocks of the README's `## <section>`, in order."""
    body = README.read_text().split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, re.DOTALL)


@pytest.mark.django_db(transaction=True)
def test_using_the_services_runs_twice_after_the_seed(file_storages):
    call_command("seed", stdout=StringIO())
    examples = python_examples("Using the services")
    assert len(examples) == 2
    for _ in range(2):
        # Fresh globals, as a new `make shell` session: the examples import what they use,
        # the second continuing in the first one's shell.
        namespace = {}
        for example in examples:
            exec(example, namespace)  # noqa: S102 - the README's own code
        assert namespace["export"].status == "completed"
        assert namespace["proposal"].status == "applied"
        assert namespace["retry"].attempt == 2
