"""axe-core, the accessibility engine, run on the page a playwright browser has open.

The one place that runs axe for the tests (tests/core/test_browser.py): `check_page`
injects the axe-core that axe-playwright-python ships (its axe.min.js; nothing is fetched
at run time), runs every rule axe enables by default on the whole page, and returns what
it found as a `PageCheck`: the violations by impact, the rules passed and, for each
violation of impact "serious" or "critical" not excluded below, a line naming the page,
the rule, the impact and the offending elements' selectors.

An exclusion is narrow: one rule on the elements matching one selector, and only for
markup Django's admin renders that we cannot reasonably change. Each says why, and
docs/development.md lists them.
"""

from collections import Counter
from dataclasses import dataclass, field

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page

# The impacts that fail the test; "moderate" and "minor" are counted and reported only.
FAILING_IMPACTS = ("critical", "serious")
IMPACTS = (*FAILING_IMPACTS, "moderate", "minor")


@dataclass(frozen=True)
class Exclusion:
    """A rule not checked on the elements a selector matches, and why."""

    rule: str
    selector: str
    why: str


EXCLUSIONS: tuple[Exclusion, ...] = (
    Exclusion(
        rule="aria-input-field-name",
        selector=".select2-container .select2-selection, "
        ".select2-container .select2-selection__rendered",
        why="Django's autocomplete fields (autocomplete_fields) are the Select2 it vendors: "
        "Select2 builds its own combobox in JavaScript and names it by the option chosen, "
        "so an empty choice leaves it nameless. The <select> it stands for keeps Django's "
        "<label>; changing Select2's markup means patching Django's vendored copy.",
    ),
)

# axe's full results: "passes" is counted, only violations need their elements listed.
# No preload: to read stylesheets axe copies an @import into the page, where Django's
# forms.css's relative `@import url("widgets.css")` resolves against the page's address,
# a request for a file that does not exist (and a 404 the test fails on). The one rule
# that reads stylesheets, css-orientation-lock, then reports "incomplete", not a pass;
# our CSS has no orientation media query for it to find.
AXE_OPTIONS = {"resultTypes": ["violations"], "preload": False}
_axe = Axe()


@dataclass
class PageCheck:
    """What axe found on one page."""

    user: str
    path: str
    passes: int = 0
    # Impact -> number of rules violated, and number of elements in violation.
    rules: Counter = field(default_factory=Counter)
    elements: Counter = field(default_factory=Counter)
    excluded: int = 0
    # The rules violated, any impact, for the summary line.
    violated: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        counts = "  ".join(
            f"{impact} {self.rules[impact]}/{self.elements[impact]}" for impact in IMPACTS
        )
        excluded = f"  excluded {self.excluded}" if self.excluded else ""
        violated = f"  ({', '.join(self.violated)})" if self.violated else ""
        return f"{self.user:<26} passes {self.passes:>2}  {counts}{excluded}  {self.path}{violated}"


def _excluded(rule: str, page: Page, target: list) -> bool:
    """Whether the element axe names (by its selector `target`) is excluded for `rule`."""
    exclusions = [exclusion for exclusion in EXCLUSIONS if exclusion.rule == rule]
    if not exclusions or len(target) != 1 or not isinstance(target[0], str):
        return False  # a target in a frame or a shadow root: no exclusion reaches there
    return any(
        page.evaluate(
            "([target, selector]) => document.querySelector(target)?.matches(selector) ?? false",
            [target[0], exclusion.selector],
        )
        for exclusion in exclusions
    )


def _selector(target: list) -> str:
    """axe's target as one string: a selector per frame (a list of them in a shadow root)."""
    return " >> ".join(part if isinstance(part, str) else " > ".join(part) for part in target)


def _detail(node: dict) -> str:
    """What axe measured on the element (a contrast ratio, a missing name), if it says."""
    messages = [check["message"] for check in node.get("any", []) + node.get("all", [])]
    return f" ({messages[0]})" if messages else ""


def check_page(page: Page, user: str, path: str) -> PageCheck:
    """axe-core run on the page open: its counts, and a line for each failing violation."""
    results = _axe.run(page, options=AXE_OPTIONS).response
    check = PageCheck(user=user, path=path, passes=len(results["passes"]))
    for violation in results["violations"]:
        rule, impact = violation["id"], violation["impact"]
        nodes = [node for node in violation["nodes"] if not _excluded(rule, page, node["target"])]
        check.excluded += len(violation["nodes"]) - len(nodes)
        if not nodes:
            continue
        check.rules[impact] += 1
        check.violated.append(f"{rule}: {impact}")
        check.elements[impact] += len(nodes)
        if impact in FAILING_IMPACTS:
            selectors = "; ".join(f"{_selector(node['target'])}{_detail(node)}" for node in nodes)
            check.failures.append(
                f"{path} ({user}): {rule} ({impact}) {violation['help']}: {selectors}"
            )
    return check
