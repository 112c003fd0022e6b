"""pyproject.toml declares the oldest versions the code really runs on (issue 17).

It allowed pgvector 0.3, but the code imports `Vector` from `pgvector`, which 0.4 brought
(0.3 has it only in pgvector.utils): installing langchain-postgres beside the project
took pgvector down to 0.3.6 and django.setup() failed.
"""

import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def declared(name: str) -> Requirement:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    [requirement] = [Requirement(d) for d in dependencies if Requirement(d).name == name]
    return requirement


def test_pgvector_floor_has_the_vector_the_code_imports():
    from pgvector import Vector  # noqa: F401 - what core.db.backend and documents import

    specifier = declared("pgvector").specifier
    assert not specifier.contains("0.3.6")
    assert specifier.contains("0.4.0")
    assert specifier.contains(version("pgvector"))
