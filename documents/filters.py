"""Metadata filters of chunk_search and of the deletion by filter: one grammar, one parser.

A filter is a dict of conditions, all of which must hold (AND):

    {
        "document.lang": "en",                          # equality (text, number, bool, null)
        "document.status": {"in": ["draft", "final"]},  # membership
        "chunk.page": {"gte": 3, "lt": 10},             # numeric range
        "document.published": {"gte": "2024-01-01"},    # date range (ISO 8601 text)
        "document.tags": {"contains": ["x"]},           # containment (JSON @>)
        "document.reviewed": {"exists": True},          # the key is there (any value)
    }

A key is `document.` or `chunk.` (whose metadata: the knowledge document's or the chunk's)
and a path of 1 to MAX_PATH_DEPTH names into that JSON object, dot-separated, each a
letter or underscore then letters, digits, `_` or `-` (KEY_SEGMENT). Its value is a
scalar (equality) or a dict of operators, all of which must hold: `eq`, `in`, `gt`,
`gte`, `lt`, `lte`, `exists`, `contains`. A condition on a key the metadata does not
hold matches nothing (`{"exists": False}` excepted, which asks for exactly that).

Anything else (an unknown operator, a value of the wrong type, a key outside the
grammar such as "a'; DROP" or "a->>b") is a ValidationError on `filters` whose message
names the key. Keys and values reach PostgreSQL as bound parameters only: the path as
a text[] for `#>`, the values as jsonb, numeric or timestamptz; the SQL around them is
fixed text chosen from OPERATOR_SQL.

How each operator is served: equality, `in` and `contains` are JSON containment
(`metadata @> '{"lang": "en"}'`), which a GIN index answers (documents_metadata_gin,
chunks_metadata_gin; jsonb_contains is marked LEAKPROOF so the index serves under
row-level security, core/ops/leakproof.py). Ranges and `exists` read the value at the
path (`metadata #> path`) and compare it only when it has the right JSON type (a number,
or text that is an ISO date), so a row whose value is of another type does not match
and never makes the query fail.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.db.models import BooleanField, F, Func, Q, TextField, Value

from core.validators import json_value_problem

FIELD = "filters"
TARGETS = ("document", "chunk")
MAX_PATH_DEPTH = 4
MAX_CONDITIONS = 16
MAX_IN_VALUES = 100
MAX_TEXT_LENGTH = 1000
# A value given to `contains`: small and shallow, as a filter is.
MAX_CONTAINS_DEPTH = 4
MAX_CONTAINS_BYTES = 10_000
KEY_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
RANGE_OPERATORS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
OPERATORS = ("eq", "in", "contains", "exists", *RANGE_OPERATORS)
# `{value}` is the JSON value at the path (`metadata #> path`); `%s` the bound operand.
NUMBER_SQL = (
    "CASE WHEN jsonb_typeof({value}) = 'number'"
    " THEN ({value})::numeric {op} %s::numeric ELSE false END"
)
# Text that starts as a date and that timestamptz accepts: never an error for the row.
DATE_SQL = (
    "CASE WHEN jsonb_typeof({value}) = 'string'"
    " AND ({value} #>> '{{}}') ~ '^[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}'"
    " AND pg_input_is_valid({value} #>> '{{}}', 'timestamptz')"
    " THEN ({value} #>> '{{}}')::timestamptz {op} %s::timestamptz ELSE false END"
)
EXISTS_SQL = {True: "({value}) IS NOT NULL", False: "({value}) IS NULL"}

Scalar = str | int | float | bool | None


@dataclass(frozen=True)
class Condition:
    """One operator on one key: `target` is "document" or "chunk"."""

    key: str
    target: str
    path: tuple[str, ...]
    operator: str
    value: Any

    def q(self, prefix: str) -> Q:
        """The condition on `<prefix>metadata` (prefix "" or "document__")."""
        column = f"{prefix}metadata"
        if self.operator == "eq":
            return Q(**{f"{column}__contains": _nested(self.path, self.value)})
        if self.operator == "in":
            either = Q()
            for item in self.value:
                either |= Q(**{f"{column}__contains": _nested(self.path, item)})
            return either
        if self.operator == "contains":
            return Q(**{f"{column}__contains": _nested(self.path, self.value)})
        if self.operator == "exists":
            return Q(_MetadataPredicate(column, self.path, EXISTS_SQL[self.value], []))
        op = RANGE_OPERATORS[self.operator]
        template = DATE_SQL if isinstance(self.value, datetime) else NUMBER_SQL
        return Q(_MetadataPredicate(column, self.path, template.replace("{op}", op), [self.value]))


@dataclass(frozen=True)
class MetadataFilter:
    """A parsed filter: its conditions, all of which must hold."""

    conditions: tuple[Condition, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.conditions)

    def of(self, target: str) -> tuple[Condition, ...]:
        return tuple(c for c in self.conditions if c.target == target)

    def document_q(self, through: str = "document__") -> Q:
        """The document conditions, on chunks (`through` "document__") or documents ("")."""
        q = Q()
        for condition in self.of("document"):
            q &= condition.q(through)
        return q

    def chunk_q(self) -> Q:
        q = Q()
        for condition in self.of("chunk"):
            q &= condition.q("")
        return q


class _MetadataPredicate(Func):
    """A fixed SQL template over the JSON value at a path of a metadata column.

    `template` holds `{value}` (as often as needed) before its `%s` operands; the column
    and the path (text[]) are compiled as parameters at each `{value}`.
    """

    output_field = BooleanField()
    conditional = True

    def __init__(
        self, column: str, path: tuple[str, ...], template: str, operands: list[Any]
    ) -> None:
        path_value = Value(list(path), output_field=ArrayField(TextField()))
        super().__init__(F(column), path_value)
        self.sql_template = template
        self.operands = operands

    def as_sql(  # type: ignore[override]  # Func's signature names more arguments
        self, compiler: Any, connection: Any, **extra_context: Any
    ) -> tuple[str, list[Any]]:
        column_sql, column_params = compiler.compile(self.source_expressions[0])
        path_sql, path_params = compiler.compile(self.source_expressions[1])
        value_sql = f"({column_sql} #> ({path_sql})::text[])"
        occurrences = self.sql_template.count("{value}")
        sql = self.sql_template.format(value=value_sql)
        params = [*column_params, *path_params] * occurrences + list(self.operands)
        return sql, params


def _nested(path: tuple[str, ...], value: object) -> dict:
    """{"a": {"b": value}} for the path ("a", "b"): what containment compares."""
    nested: object = value
    for segment in reversed(path):
        nested = {segment: nested}
    return nested  # type: ignore[return-value]


def _name(key: object) -> str:
    """The key as an error message shows it: quoted, and cut when long."""
    text = repr(key)
    return text if len(text) <= 80 else text[:77] + "..."


def _refuse(key: object, message: str) -> ValidationError:
    return ValidationError({FIELD: f"{_name(key)}: {message}"})


def _parse_key(key: object) -> tuple[str, tuple[str, ...]]:
    grammar = (
        "a key is 'document.<name>' or 'chunk.<name>', names of letters, digits, '_' or '-'"
        f" (starting with a letter or '_'), at most {MAX_PATH_DEPTH} of them joined by '.'"
    )
    if not isinstance(key, str):
        raise _refuse(key, f"keys are text; {grammar}.")
    target, _dot, rest = key.partition(".")
    if target not in TARGETS or not rest:
        raise _refuse(key, f"unknown key; {grammar}.")
    path = tuple(rest.split("."))
    if len(path) > MAX_PATH_DEPTH:
        raise _refuse(key, f"the path is deeper than {MAX_PATH_DEPTH} names.")
    if not all(KEY_SEGMENT.fullmatch(segment) for segment in path):
        raise _refuse(key, f"not a valid key; {grammar}.")
    return target, path


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _scalar(key: str, value: object, operator: str) -> Scalar:
    """A scalar to compare with: text, a finite number, true, false or null."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        problem = json_value_problem(value, max_depth=0, max_bytes=MAX_TEXT_LENGTH)
        if problem:
            raise _refuse(key, f"the value of '{operator}' {problem}")
        return value
    if _is_number(value):
        problem = json_value_problem(value, max_depth=0, max_bytes=MAX_TEXT_LENGTH)
        if problem:
            raise _refuse(key, f"the value of '{operator}' {problem}")
        return value  # type: ignore[return-value]
    kind = type(value).__name__
    hint = " (a list: use 'in' or 'contains')" if isinstance(value, list | tuple) else ""
    raise _refuse(
        key, f"'{operator}' compares with text, a number, true, false or null, not {kind}{hint}."
    )


def _range_operand(key: str, operator: str, value: object) -> Decimal | datetime:
    """A number (compared with JSON numbers) or an ISO date (compared with ISO date text)."""
    if _is_number(value):
        if isinstance(value, float) and not math.isfinite(value):
            raise _refuse(key, f"'{operator}' needs a finite number, not {value!r}.")
        problem = json_value_problem(value, max_depth=0, max_bytes=MAX_TEXT_LENGTH)
        if problem:
            raise _refuse(key, f"the value of '{operator}' {problem}")
        return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)  # type: ignore[arg-type]
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str) and len(value) <= 64:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise _refuse(
                key, f"'{operator}' needs a number or an ISO 8601 date, not {_name(value)}."
            ) from None
    else:
        raise _refuse(
            key, f"'{operator}' needs a number or an ISO 8601 date, not {type(value).__name__}."
        )
    # A date or time without a zone is UTC, as the metadata's own are read (TIME_ZONE).
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _operand(key: str, operator: str, value: object) -> object:
    if operator == "eq":
        return _scalar(key, value, operator)
    if operator == "in":
        if not isinstance(value, list | tuple) or not 1 <= len(value) <= MAX_IN_VALUES:
            raise _refuse(key, f"'in' needs a list of 1 to {MAX_IN_VALUES} values.")
        return tuple(_scalar(key, item, operator) for item in value)
    if operator == "exists":
        if not isinstance(value, bool):
            raise _refuse(key, f"'exists' needs true or false, not {type(value).__name__}.")
        return value
    if operator == "contains":
        problem = json_value_problem(
            value, max_depth=MAX_CONTAINS_DEPTH, max_bytes=MAX_CONTAINS_BYTES
        )
        if problem:
            raise _refuse(key, f"the value of 'contains' {problem}")
        # An array holds a scalar: "tags contains 'x'" is "tags contains ['x']".
        return value if isinstance(value, dict | list) else [value]
    return _range_operand(key, operator, value)


def parse_filters(filters: object) -> MetadataFilter:
    """The MetadataFilter of `filters` (see the module's grammar), or ValidationError on
    `filters` naming the key at fault. None and {} filter nothing."""
    if filters is None:
        return MetadataFilter()
    if not isinstance(filters, Mapping):
        raise ValidationError(
            {FIELD: f"Filters are a dict of key: condition, not {type(filters).__name__}."}
        )
    if len(filters) > MAX_CONDITIONS:
        raise ValidationError({FIELD: f"At most {MAX_CONDITIONS} keys in one filter."})
    conditions = []
    for key, condition in filters.items():
        target, path = _parse_key(key)
        if isinstance(condition, Mapping):
            if not condition:
                raise _refuse(key, f"an empty condition; give one of {', '.join(OPERATORS)}.")
            operators = list(condition.items())
        else:
            operators = [("eq", condition)]
        for operator, value in operators:
            if operator not in OPERATORS:
                raise _refuse(
                    key,
                    f"unknown operator {_name(operator)}; expected one of {', '.join(OPERATORS)}.",
                )
            operand = _operand(key, operator, value)
            conditions.append(Condition(key, target, path, operator, operand))
    return MetadataFilter(tuple(conditions))
