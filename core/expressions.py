"""Database expressions shared by the apps."""

from django.db import models


class Sha256Hex(models.Func):
    """Hex SHA-256 of a text's UTF-8 bytes, computed by PostgreSQL."""

    template = "encode(sha256(convert_to(%(expressions)s, 'UTF8')), 'hex')"
    output_field = models.CharField()


class ClockTimestamp(models.Func):
    """PostgreSQL's clock_timestamp(): the time of the statement, not of the transaction.

    now() is frozen at the transaction's start, so a start and a finish written in one
    transaction would give a zero duration; the wall clock measures the work between them.
    """

    template = "clock_timestamp()"
    output_field = models.DateTimeField()
