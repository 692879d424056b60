# Patterns: raw-env-one-string, obsolete-names, pythonpath-string, limit-request-fields-large,
#   limit-request-zero, user-numeric.
# The classic Django deployment file: raw_env as a single string, `command` (a name Gunicorn
# never read), pythonpath pointing at the project.
import os

command = "/srv/venv/bin/gunicorn"
pythonpath = os.environ["CORPUS_DIR"]
bind = "127.0.0.1:8001"
workers = 1
user = 0
limit_request_fields = 32000
limit_request_field_size = 0
raw_env = "DJANGO_SETTINGS_MODULE=corpus.settings"
accesslog = "-"
