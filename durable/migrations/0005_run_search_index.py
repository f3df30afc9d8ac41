"""Full-text search over run input and output (the run browser's search box), PostgreSQL only.

The expression must stay identical to runs.listing.search_vector(): PostgreSQL uses an expression
index only for the very same expression. Built CONCURRENTLY so that adding it to a large table does
not block writers (hence atomic = False). SQLite searches with a plain scan and gets no index.
"""

from django.db import migrations

INDEX = "run_search_gin"
EXPRESSION = (
    "to_tsvector('simple'::regconfig, "
    "COALESCE((\"input\")::text, '') || ' ' || COALESCE((\"output\")::text, ''))"
)


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON durable_run USING gin ({EXPRESSION})"
    )


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("durable", "0004_alter_run_status"),
    ]

    operations = [
        migrations.RunPython(create_index, drop_index, elidable=False),
    ]
