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


# -- the fan-out scenario (fanout.py): projects of ~100 members, their tasks, a personal inbox ----
# Foreign keys to auth.User carry no database constraint: syncdb creates these tables before
# auth's migrations run on the PostgreSQL aliases, where a constraint would fail.
class FanProject(models.Model):
    name = models.CharField(max_length=50)
    members = models.ManyToManyField("auth.User", related_name="fan_projects",
                                     through="FanMember")

    class Meta:
        app_label = "benchapp"


class FanMember(models.Model):
    project = models.ForeignKey(FanProject, on_delete=models.CASCADE)
    user = models.ForeignKey("auth.User", on_delete=models.CASCADE, db_constraint=False)

    class Meta:
        app_label = "benchapp"


class FanTask(models.Model):
    """A row whose changes every member of its project sees. ``seq`` (the publisher's change
    number), ``point`` (the load step) and ``stamp`` (time.time() in save(), before COMMIT) let
    the client fleet time and count each delivery."""

    project = models.ForeignKey(FanProject, on_delete=models.CASCADE, related_name="tasks")
    title = models.CharField(max_length=100)
    seq = models.BigIntegerField(default=-1)
    point = models.IntegerField(default=0)
    stamp = models.FloatField(default=0.0)

    class Meta:
        app_label = "benchapp"


class FanInbox(models.Model):
    """Declares each user's personal channel ``$user:{owner_id}`` (authorize="owner")."""

    owner = models.ForeignKey("auth.User", on_delete=models.CASCADE, db_constraint=False)

    class Meta:
        app_label = "benchapp"
