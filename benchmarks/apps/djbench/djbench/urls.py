"""URL map: the benchmarked view is the site root."""

from django.urls import path

from bench.views import greeting

urlpatterns = [path("", greeting)]
