"""The benchmark model: ten concrete fields of the usual kinds (no migrations: syncdb)."""

from django.db import models


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
