"""URLs of the approval inbox (namespace "approvals"), included at /approvals/ by config/urls.py.
tests/runs/test_roles.py fails if a pattern here has no row in its role matrix."""

from django.urls import path

from approvals import views

app_name = "approvals"

urlpatterns = [
    path("", views.inbox_view, name="inbox"),
    path("history/", views.history, name="history"),
    path("bulk/", views.bulk, name="bulk"),
    path("<int:approval_id>/", views.detail, name="detail"),
    path("<int:approval_id>/decide/", views.decide, name="decide"),
    path("<int:approval_id>/preview/", views.preview, name="preview"),
    path("<int:approval_id>/comment/", views.comment, name="comment"),
]
