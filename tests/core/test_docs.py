"""The documentation in the repository stays true to the repository.

- docs/configuration.md's reference and .env.example name the same variables;
- every relative link of README.md and docs/ leads to a file (and heading) that exists;
- no file in the repository points outside it: no path above the repository, no
  contract document elsewhere, no web address but local and reserved example ones.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
MARKDOWN = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
EXPECTED_PAGES = {
    "README.md",
    "architecture.md",
    "configuration.md",
    "development.md",
    "operations.md",
    "security.md",
    "services.md",
}

# --- Configuration --------------------------------------------------------------------

# In .env.example every variable is a commented-out assignment: `# NAME=default`.
ENV_ASSIGNMENT = re.compile(r"^#\s?([A-Z][A-Z0-9_]*)=", re.MULTILINE)
# In the reference every variable is the first cell of a table row: | `NAME` | ...
REFERENCE_ROW = re.compile(r"^\|\s*`([A-Z][A-Z0-9_]*)`\s*\|", re.MULTILINE)


def env_example_variables() -> set[str]:
    return set(ENV_ASSIGNMENT.findall((ROOT / ".env.example").read_text()))


def configuration_reference() -> set[str]:
    text = (DOCS / "configuration.md").read_text()
    reference = text.split("\n## Reference\n", 1)[1].split("\n## ", 1)[0]
    return set(REFERENCE_ROW.findall(reference))


def test_env_example_variables_are_in_the_configuration_reference():
    missing = env_example_variables() - configuration_reference()
    assert not missing, f"in .env.example, not in docs/configuration.md: {sorted(missing)}"


def test_configuration_reference_names_only_env_example_variables():
    extra = configuration_reference() - env_example_variables()
    assert not extra, f"in docs/configuration.md, not in .env.example: {sorted(extra)}"


def test_the_parsers_find_the_variables():
    assert {"DATABASE_URL", "SECRET_KEY", "APP_DB_PASSWORD"} <= env_example_variables()
    assert len(configuration_reference()) > 50


# --- Links ----------------------------------------------------------------------------

FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """Markdown without its code: links inside code are not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def anchor(heading: str) -> str:
    """The id a Markdown renderer gives a heading (the GitHub flavour)."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", FENCE.sub("", path.read_text()), re.MULTILINE):
        base = anchor(heading)
        name, number = base, 0
        while name in found:
            number += 1
            name = f"{base}-{number}"
        found.add(name)
    return found


def relative_links(path: Path) -> list[str]:
    return [
        target
        for target in LINK.findall(prose(path.read_text()))
        if not re.match(r"[a-z]+:", target)
    ]


def test_docs_tree_has_its_pages_and_the_index_lists_them():
    pages = {path.name for path in DOCS.glob("*.md")}
    assert EXPECTED_PAGES <= pages
    indexed = {Path(target.partition("#")[0]).name for target in relative_links(DOCS / "README.md")}
    assert pages - {"README.md"} <= indexed, "docs/README.md must list every page"


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_resolve(path):
    broken = []
    for target in relative_links(path):
        file_part, _, fragment = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.is_relative_to(ROOT) or not linked.exists():
            broken.append(f"{target}: no such file in the repository")
        elif fragment and (linked.suffix != ".md" or fragment not in anchors(linked)):
            broken.append(f"{target}: no such heading")
    assert not broken, f"{path.relative_to(ROOT)}: {broken}"


def test_readme_is_short_and_leads_to_every_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 170
    assert "make run" in text and "make test" in text
    assert "/admin/" in text
    linked = {Path(target.partition("#")[0]).name for target in relative_links(ROOT / "README.md")}
    assert EXPECTED_PAGES - {"README.md"} <= linked


# --- Nothing outside the repository ---------------------------------------------------

TEXT_SUFFIXES = {".md", ".py", ".toml", ".yml", ".yaml", ".ini", ".sql", ".sh", ".cfg", ".txt"}
TEXT_SUFFIXES |= {".html", ".css", ".js"}
TEXT_NAMES = {"Makefile", "Dockerfile", ".env.example", "run", ".gitignore", ".dockerignore"}
# Spelled in pieces, so that this file does not match itself.
OUTSIDE = [
    re.compile(re.escape("../" + "shared")),
    re.compile(re.escape("DESIGN" + ".md")),
]
URL = re.compile(r"https?://([^/\s)>\]\"'`:,]+)")
# Loopback, RFC 2606's reserved example domains, and the Django test client's host.
LOCAL_HOSTS = re.compile(r"(localhost|127\.0\.0\.1|testserver|(.+\.)?example\.(com|org|net))$")


def repository_files() -> list[Path]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, text=True
        ).stdout.split("\0")
        files = [ROOT / name for name in listed if name]
    except (OSError, subprocess.CalledProcessError):
        skipped = {".git", ".venv", "var", "__pycache__", ".pytest_cache", ".ruff_cache"}
        files = [
            path
            for path in ROOT.rglob("*")
            if path.is_file() and not skipped & set(path.relative_to(ROOT).parts)
        ]
    return [
        path
        for path in files
        if (path.suffix in TEXT_SUFFIXES or path.name in TEXT_NAMES) and path.is_file()
    ]


def test_the_file_list_covers_the_repository():
    names = {str(path.relative_to(ROOT)) for path in repository_files()}
    assert {"README.md", "Makefile", "Dockerfile", ".env.example", "config/settings.py"} <= names


def test_no_file_points_outside_the_repository():
    offenders = []
    for path in repository_files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            where = f"{path.relative_to(ROOT)}:{number}"
            offenders += [f"{where}: {p.pattern}" for p in OUTSIDE if p.search(line)]
            offenders += [
                f"{where}: {host}"
                for host in URL.findall(line)
                if not LOCAL_HOSTS.match(host.rstrip("."))
            ]
    assert not offenders, "\n".join(offenders)
