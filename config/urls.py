from django.contrib import admin
from django.templatetags.static import static
from django.urls import path
from django.views.generic import RedirectView, TemplateView

from core.ops.health import HealthView

urlpatterns = [
    # What runserver's URL and the admin's "View site" open: links to the rest.
    path("", TemplateView.as_view(template_name="core/home.html"), name="home"),
    path("admin/", admin.site.urls),
    path("health/", HealthView.as_view(), name="health"),
    # Browsers ask for it on pages without an icon link (the admin's has one).
    path("favicon.ico", RedirectView.as_view(url=static("core/favicon.svg"), permanent=True)),
]
