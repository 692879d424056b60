"""URL map: the benchmarked view is the site root."""

from bench.views import greeting
from django.urls import path

urlpatterns = [path("", greeting)]
