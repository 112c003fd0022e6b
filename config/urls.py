from django.contrib import admin
from django.templatetags.static import static
from django.urls import path
from django.views.generic import RedirectView

from core.ops.health import HealthView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("health/", HealthView.as_view(), name="health"),
    # Browsers ask for it on pages without an icon link (the admin's has one).
    path("favicon.ico", RedirectView.as_view(url=static("core/favicon.svg"), permanent=True)),
]
