"""A data migration through historical models (tests/test_write_paths.py runs it again): every
counter gets 100 more, "obsolete" ones are deleted, and a summary row is created when there
were counters. A fresh database has none, so creating it publishes nothing."""

from django.db import migrations


def forwards(apps, schema_editor):
    Counter = apps.get_model("testapp", "Counter")
    db = schema_editor.connection.alias
    rows = list(Counter.objects.using(db).all())
    for counter in rows:
        if counter.title == "obsolete":
            counter.delete()
        else:
            counter.count += 100
            counter.save()
    if rows:
        Counter.objects.using(db).create(title="summary", count=len(rows))


class Migration(migrations.Migration):

    dependencies = [("testapp", "0003_write_paths")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
