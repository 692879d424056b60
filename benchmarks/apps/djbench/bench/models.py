"""The one model of the benchmark project."""

from django.db import models


class Greeting(models.Model):
    name = models.CharField(max_length=64)
    message = models.TextField()
    created = models.DateTimeField(auto_now_add=True)
