# A config loaded as a module: `-c python:corpus_settings` (the module is on PYTHONPATH).
# Patterns: config-as-module, int(os.environ.get(...)) with string defaults, helper globals.
import os

workers = int(os.environ.get("CORPUS_WORKERS", "2"))
threads = int(os.environ.get("CORPUS_THREADS", "2"))
worker_class = "gthread"
accesslog = "-"
timeout = 60
