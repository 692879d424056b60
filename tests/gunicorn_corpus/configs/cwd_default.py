# Patterns: config-in-cwd-default, bind-port-only, numbers-as-strings, access-log-stdout.
# The file a project keeps as ./gunicorn.conf.py so that a bare `gunicorn app` finds it
# (the command-line corpus copies it there); it also runs with -c.
bind = ":5000"
workers = "2"
timeout = "120"
accesslog = "-"
errorlog = "-"
