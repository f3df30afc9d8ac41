"""Database triggers that refuse changes to the audit trail (INV-13).

PostgreSQL refuses UPDATE and DELETE (TRUNCATE, which the test suite's flush uses, bypasses row
triggers). SQLite refuses UPDATE; its flush is a plain DELETE, so there deletes are refused by the
application (the model and admin) instead."""

from django.db import migrations

SQLITE = [
    """CREATE TRIGGER approvals_audit_no_update BEFORE UPDATE ON approvals_auditrecord
       BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;""",
]
SQLITE_REVERSE = [
    "DROP TRIGGER IF EXISTS approvals_audit_no_update;",
    "DROP TRIGGER IF EXISTS approvals_audit_no_delete;",
]
POSTGRES = [
    """CREATE OR REPLACE FUNCTION approvals_audit_append_only() RETURNS trigger AS $$
       BEGIN RAISE EXCEPTION 'audit records are append-only'; END; $$ LANGUAGE plpgsql;""",
    """CREATE TRIGGER approvals_audit_no_change BEFORE UPDATE OR DELETE ON approvals_auditrecord
       FOR EACH ROW EXECUTE FUNCTION approvals_audit_append_only();""",
]
POSTGRES_REVERSE = [
    "DROP TRIGGER IF EXISTS approvals_audit_no_change ON approvals_auditrecord;",
    "DROP FUNCTION IF EXISTS approvals_audit_append_only();",
]


def forwards(apps, schema_editor):
    statements = POSTGRES if schema_editor.connection.vendor == "postgresql" else SQLITE
    for sql in statements:
        schema_editor.execute(sql)


def backwards(apps, schema_editor):
    statements = POSTGRES_REVERSE if schema_editor.connection.vendor == "postgresql" else SQLITE_REVERSE
    for sql in statements:
        schema_editor.execute(sql)


class Migration(migrations.Migration):
    dependencies = [("approvals", "0001_initial")]
    operations = [migrations.RunPython(forwards, backwards)]
