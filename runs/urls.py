"""URLs of the run browser (namespace "runs"). Login, logout and the home redirect are in
runs/site_urls.py. tests/runs/test_roles.py fails if a pattern here has no row in its role matrix."""

from django.urls import path

from runs import views

app_name = "runs"

urlpatterns = [
    path("runs/", views.run_list, name="list"),
    path("runs/new/", views.start_run, name="start"),
    path("runs/<int:run_id>/", views.run_detail, name="detail"),
    path("runs/<int:run_id>/steps/", views.run_steps, name="steps"),
    path("runs/<int:run_id>/steps/<int:seq>/", views.step_detail, name="step"),
    path("runs/<int:run_id>/events/", views.run_events, name="events"),
    *[
        path(f"runs/<int:run_id>/{action}/", views.run_control, {"action": action}, name=action)
        for action in views.CONTROLS
    ],
    path("runs/<int:run_id>/resolve/", views.run_resolve, name="resolve"),
]
