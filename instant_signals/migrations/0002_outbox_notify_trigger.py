"""PostgreSQL only: wake Centrifugo's outbox consumer at once when an outbox row is inserted.

``pg_notify('instant_signals_outbox', NEW.partition::text)`` on every insert, matching the
consumer's ``partition_notification_channel`` written by ``installws`` /
``centrifugo_config.generate_config(outbox_dsn=...)``. Without it the consumer still polls every
``partition_poll_interval``. On other databases this migration does nothing.
"""

from django.db import migrations

TABLE = "instant_signals_outbox"
CHANNEL = "instant_signals_outbox"
FUNCTION = "instant_signals_outbox_notify"
TRIGGER = "instant_signals_outbox_notify"


def create_trigger(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(
        f"""
        CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', NEW.partition::text);
            RETURN NEW;
        END;
        $$ LANGUAGE plpgsql
        """
    )
    schema_editor.execute(f"DROP TRIGGER IF EXISTS {TRIGGER} ON {TABLE}")
    schema_editor.execute(
        f"CREATE TRIGGER {TRIGGER} AFTER INSERT ON {TABLE} "
        f"FOR EACH ROW EXECUTE FUNCTION {FUNCTION}()"
    )


def drop_trigger(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"DROP TRIGGER IF EXISTS {TRIGGER} ON {TABLE}")
    schema_editor.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}()")


class Migration(migrations.Migration):

    dependencies = [
        ("instant_signals", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(create_trigger, drop_trigger, elidable=False),
    ]
