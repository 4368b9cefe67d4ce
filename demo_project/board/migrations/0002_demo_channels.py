"""The demo's Channel rows: ``feed`` for everyone, ``$staff`` for staff members."""

from django.db import migrations

CHANNELS = [("feed", "public"), ("$staff", "staff")]


def create_channels(apps, schema_editor):
    Channel = apps.get_model("instant_signals", "Channel")
    for name, level in CHANNELS:
        Channel.objects.update_or_create(name=name, defaults={"level": level, "is_active": True})


def delete_channels(apps, schema_editor):
    Channel = apps.get_model("instant_signals", "Channel")
    Channel.objects.filter(name__in=[name for name, _ in CHANNELS]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("board", "0001_initial"),
        ("instant_signals", "0001_initial"),
    ]

    operations = [migrations.RunPython(create_channels, delete_channels)]
