import os

from django.apps import AppConfig


class ShopConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "shop"
    ready_pid = 0

    def ready(self):
        # The process that ran django.setup(): a worker, or with --preload the
        # master before it forked. The /process/ view reports it.
        ShopConfig.ready_pid = os.getpid()
