"""Database expressions shared by the apps."""

from collections.abc import Sequence
from typing import Any

from django.db import models
from pgvector import Vector
from pgvector.django import VectorField


class Sha256Hex(models.Func):
    """Hex SHA-256 of a text's UTF-8 bytes, computed by PostgreSQL."""

    template = "encode(sha256(convert_to(%(expressions)s, 'UTF8')), 'hex')"
    output_field = models.CharField()


class VectorDims(models.Func):
    """pgvector's vector_dims(v): the number of dimensions of a vector."""

    function = "vector_dims"
    output_field = models.IntegerField()


class StatementTimestamp(models.Func):
    """PostgreSQL's statement_timestamp(): when the statement began, not the transaction.

    now() is frozen at the transaction's start, so a start and a finish written in one
    transaction would give a zero duration; the statements' own times measure the work
    between them. Not clock_timestamp(): it is VOLATILE, which Citus refuses in an UPDATE
    of a distributed table; statement_timestamp() is STABLE, one value per statement.
    """

    template = "statement_timestamp()"
    output_field = models.DateTimeField()


class _Vector(Vector):
    # Django hashes a query's parameters now and then (de-duplicating ORDER BY terms);
    # pgvector's Vector defines __eq__ and so has no hash of its own.
    __hash__ = object.__hash__


class QueryVector(models.Expression):
    """A vector given to a query as one parameter, `%s::vector`.

    A server-binding cursor (core.db.backend's server_binding_cursor) sends it in
    pgvector's binary form, Django's default cursors as a text literal. pgvector.django's
    distance functions always send a text literal, which Python formats and the server
    parses: for 1536 dimensions some 15,000 characters each way.
    """

    output_field = VectorField()

    def __init__(self, vector: Sequence[float]) -> None:
        super().__init__()
        self.vector = _Vector(list(vector))
        # Django compares expressions by their constructor arguments, made hashable
        # element by element: 1536 floats, several times per query compiled. The Vector
        # object stands for them (equal only to itself), as in pgvector.django.
        self._constructor_args: tuple[tuple[Any, ...], dict[str, Any]] = ((self.vector,), {})

    def as_sql(self, compiler, connection):
        return "%s::vector", [self.vector]
