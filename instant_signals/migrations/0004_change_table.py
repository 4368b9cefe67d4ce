"""The change table of database capture (``INSTANT_SIGNALS["CAPTURE"] = "database"``).

The triggers themselves are installed after ``migrate`` (``post_migrate``) or by ``manage.py
instant_triggers``, from the declarations. Unapplying this migration drops every capture
trigger first: on SQLite a trigger whose change table is gone would fail the writes of its
table.
"""

from django.db import migrations, models

PREFIX = "instant_signals_capture_"


def drop_capture_triggers(apps, schema_editor):
    connection = schema_editor.connection
    qn = connection.ops.quote_name
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' "
                           "AND substr(name, 1, %s) = %s", [len(PREFIX), PREFIX])
            for (name,) in cursor.fetchall():
                schema_editor.execute(f"DROP TRIGGER IF EXISTS {qn(name)}")
        elif connection.vendor == "postgresql":
            schema_editor.execute("DROP FUNCTION IF EXISTS instant_signals_capture() CASCADE")


class Migration(migrations.Migration):

    dependencies = [
        ('instant_signals', '0003_outbox_dead_letters'),
    ]

    operations = [
        migrations.CreateModel(
            name='ChangeEntry',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('table_name', models.TextField(help_text='The database table the row belongs to.')),
                ('op', models.CharField(help_text='I (insert), U (update) or D (delete).', max_length=1)),
                ('row_pk', models.TextField(blank=True, help_text="The row's primary key, as text.", null=True)),
                ('old_row', models.JSONField(blank=True, help_text='The row before (update, delete).', null=True)),
                ('new_row', models.JSONField(blank=True, help_text='The row after (insert, update).', null=True)),
                ('txid', models.BigIntegerField(blank=True, help_text='The writing transaction (PostgreSQL).', null=True)),
                ('created_at', models.DateTimeField(help_text='When the trigger captured it.')),
                ('attempts', models.PositiveIntegerField(default=0)),
                ('error', models.TextField(blank=True, help_text='Why the relay could not map the row.', null=True)),
                ('dead_at', models.DateTimeField(blank=True, help_text='Set when the relay gave up on the row (a dead letter).', null=True)),
            ],
            options={
                'verbose_name': 'captured change',
                'verbose_name_plural': 'captured changes',
                'db_table': 'instant_signals_change',
                'ordering': ['id'],
            },
        ),
        migrations.RunPython(migrations.RunPython.noop, drop_capture_triggers, elidable=False),
    ]
