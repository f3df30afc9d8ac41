from django.contrib import admin
from django.urls import include, path

from runs.api import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("runs.site_urls")),
    path("", include("runs.urls")),
    path("approvals/", include("approvals.urls")),
    path("api/", api.urls),
    path("tokens/", include("runs.tokens")),
]
