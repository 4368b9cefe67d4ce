"""The benchmark models: ten concrete fields of the usual kinds (no migrations: syncdb), and
``Card`` (a name and a number: ``html_render.py``'s fragments).

``TrackedItem`` is the same model with django-model-utils' ``FieldTracker`` attached (scenario
4 measures what the tracker alone costs); it exists only where django-model-utils is installed.
"""

from django.db import models

try:
    from model_utils import FieldTracker
except ImportError:  # the django-instant venv: no django-model-utils
    FieldTracker = None


class Item(models.Model):
    # id is the tenth field (BigAutoField from DEFAULT_AUTO_FIELD)
    title = models.CharField(max_length=100)
    body = models.TextField()
    count = models.IntegerField()
    price = models.DecimalField(max_digits=10, decimal_places=2)
    done = models.BooleanField(default=False)
    created = models.DateTimeField()
    day = models.DateField()
    ratio = models.FloatField()
    ref = models.UUIDField()

    class Meta:
        app_label = "benchapp"


class Card(models.Model):
    """A card on a board: ``html_render.py`` publishes it as JSON and as an HTML fragment."""

    name = models.CharField(max_length=50)
    code = models.IntegerField(default=0)
    secret = models.CharField(max_length=50, blank=True)

    class Meta:
        app_label = "benchapp"


if FieldTracker is not None:
    class TrackedItem(models.Model):
        title = models.CharField(max_length=100)
        body = models.TextField()
        count = models.IntegerField()
        price = models.DecimalField(max_digits=10, decimal_places=2)
        done = models.BooleanField(default=False)
        created = models.DateTimeField()
        day = models.DateField()
        ratio = models.FloatField()
        ref = models.UUIDField()

        tracker = FieldTracker()  # every field, as the redesign would have attached it

        class Meta:
            app_label = "benchapp"
