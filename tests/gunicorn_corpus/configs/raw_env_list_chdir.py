# Patterns: raw-env-list, raw-env-value-with-equals, chdir-setting, misspelt-names, booleans-false.
# raw_env as a list (a value holding '='), chdir to the deployment dir, and `pid` where
# the setting is `pidfile`.
import os

daemon = False
chdir = os.environ["CORPUS_DIR"]
bind = "0.0.0.0:8001"
worker_class = "gthread"
workers = 1
threads = 2
timeout = 60
capture_output = False
pid = "corpus.pid"
raw_env = [
    "DJANGO_SETTINGS_MODULE=config.settings.production",
    "CORPUS_MARK=a=b=c",
]
accesslog = "-"
errorlog = "-"
