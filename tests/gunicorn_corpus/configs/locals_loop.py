# Patterns: settings-from-env-loop, loop-variables-leak, numbers-as-strings, debug-name.
# Every GUNICORN_* environment variable becomes a setting through locals(); the loop
# variables k and v stay behind as module globals.
import os

os.environ.setdefault("GUNICORN_THREADS", "2")
os.environ.setdefault("GUNICORN_WORKER_CLASS", "gthread")

for k, v in os.environ.items():
    if k.startswith("GUNICORN_"):
        key = k.split("_", 1)[1].lower()
        locals()[key] = v

workers = 2
bind = "0.0.0.0:5000"
loglevel = "info"
accesslog = "-"
debug = True
