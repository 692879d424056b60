# Patterns: misspelt-names, obsolete-names, annotated-names, x-forwarded-for-header, log-file-name,
#   preload-not-preload-app.
# Names that look like settings but are not (Gunicorn ignores them): pid_file, log_level,
# acceslogformat, access_logfile, thread, keepalive_timeout, preload, name, log_file, and the
# long-removed x_forwarded_for_header; plus annotated names.
bind = "0.0.0.0:8000"
workers: int = 2
timeout: 600
pid_file = "./run/gunicorn.pid"
log_level = "debug"
acceslogformat = "%(h)s %(r)s %(s)s"
access_logfile = "-"
thread = 5
keepalive_timeout = 5
preload = True
name = "corpus-misspelt"
log_file = "-"
x_forwarded_for_header = "X-FORWARDED-FOR"
accesslog = "-"
