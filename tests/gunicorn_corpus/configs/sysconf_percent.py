# Patterns: workers-sysconf, bind-percent-format, bind-template-placeholder, loglevel-error,
#   proc-name-template.
# Deployment-tool output: the bind still holds a template placeholder (the command line
# overrides it), workers from sysconf, only errors logged.
import os

bind = "127.0.0.1:%(gunicorn_port)s"
workers = min((os.sysconf("SC_NPROCESSORS_ONLN") * 2) + 1, 3)
loglevel = "error"
proc_name = "%(proj_name)s"
