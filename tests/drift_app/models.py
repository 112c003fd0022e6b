from django.db import models


class Drift(models.Model):
    """A model changed without `makemigrations`."""

    name = models.CharField(max_length=10)

    class Meta:
        app_label = "drift_app"

    def __str__(self) -> str:
        return self.name
