"""The services examples run as docs/services.md and the README say, so they cannot rot."""

import re
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "docs" / "services.md"
README = ROOT / "README.md"


def python_examples(path: Path) -> list[str]:
    """The ```python blocks of a Markdown file, in order."""
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.DOTALL)


@pytest.mark.django_db(transaction=True)
def test_the_services_examples_run_twice_after_the_seed(file_storages):
    call_command("seed", stdout=StringIO())
    # The README's first taste, as a newcomer types it in `make shell`.
    (taste,) = python_examples(README)
    exec(taste, {})  # noqa: S102 - the README's own code
    examples = python_examples(SERVICES)
    assert len(examples) == 2
    for _ in range(2):
        # Fresh globals, as a new `make shell` session: the examples import what they use,
        # the second continuing in the first one's shell.
        namespace = {}
        for example in examples:
            exec(example, namespace)  # noqa: S102 - the documentation's own code
        assert namespace["export"].status == "completed"
        assert namespace["proposal"].status == "applied"
        assert namespace["retry"].attempt == 2
        assert [item.version for item in namespace["stale"].versions] == [namespace["v1"]]
