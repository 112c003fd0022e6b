"""Helpers shared by the admin tests of every app."""

from django.urls import reverse

# How the admin refuses a row the user may not see or touch.
REFUSED = (403, 404)


def admin_url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def logged_in(client, user):
    client.force_login(user)
    return client


def listed(client, model, **params) -> list:
    """The primary keys a user's changelist of `model` shows."""
    response = client.get(admin_url(model, "changelist"), params)
    assert response.status_code == 200
    return [row.pk for row in response.context["cl"].result_list]


def autocomplete(client, app_label: str, model_name: str, field_name: str, term: str = ""):
    """The ids the admin's autocomplete offers for `field_name` of app_label.model_name."""
    response = client.get(
        reverse("admin:autocomplete"),
        {"app_label": app_label, "model_name": model_name, "field_name": field_name, "term": term},
    )
    assert response.status_code == 200
    return [result["id"] for result in response.json()["results"]]
