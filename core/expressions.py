"""Database expressions shared by the apps."""

from django.db import models


class Sha256Hex(models.Func):
    """Hex SHA-256 of a text's UTF-8 bytes, computed by PostgreSQL."""

    template = "encode(sha256(convert_to(%(expressions)s, 'UTF8')), 'hex')"
    output_field = models.CharField()
