# Patterns: certfile-keyfile, ssl-version-string, do-handshake-on-connect, bind-list,
#   log-paths-under-env-dir.
# TLS terminated by Gunicorn itself; bind given as a one-element list.
import os

_DIR = os.environ["CORPUS_DIR"]
bind = ["0.0.0.0:443"]
workers = 1
certfile = os.path.join(_DIR, "server.crt")
keyfile = os.path.join(_DIR, "server.key")
ssl_version = "TLS_SERVER"
do_handshake_on_connect = True
accesslog = os.path.join(_DIR, "tls-access.log")
errorlog = "-"
loglevel = "debug"
