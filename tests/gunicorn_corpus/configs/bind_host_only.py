# Patterns: bind-host-only, preload-app, wsgi-app-factory, access-log-none-errorlog-dash,
#   max-requests-jitter.
# A bind without a port, and the app named in the config as a factory call.
wsgi_app = "corpus_app:create_app()"
accesslog = None
errorlog = "-"
preload_app = True
bind = "0.0.0.0"
max_requests = 1200
max_requests_jitter = 100
threads = 2
