# Patterns: statsd-host-prefix, setting-under-if, dogstatsd-tags, imported-modules,
#   private-helper-names.
# StatsD metrics switched on from the environment; names with a leading underscore as helpers.
import os
import socket

_statsd_host = os.getenv("CORPUS_STATSD_HOST", "127.0.0.1")
_statsd_port = os.getenv("CORPUS_STATSD_PORT", "9125")

workers = 2
worker_class = "gevent"
accesslog = "-"
errorlog = "-"
if _statsd_host and _statsd_port:
    statsd_host = f"{_statsd_host}:{_statsd_port}"
    statsd_prefix = socket.gethostname()
    dogstatsd_tags = "env:corpus,service:web"
