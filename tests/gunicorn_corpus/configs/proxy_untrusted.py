# Patterns: forwarded-allow-ips-specific, secure-scheme-headers-one, forwarder-headers,
#   proxy-allow-ips.
# Only the proxy at 10.0.0.1 is trusted: headers from anyone else (the test's 127.0.0.1)
# must not change the scheme.
bind = "unix:/run/corpus/gunicorn.sock"
workers = 1
forwarded_allow_ips = "10.0.0.1"
proxy_allow_ips = "10.0.0.1"
secure_scheme_headers = {"X-Forwarded-Proto": "https"}
forwarder_headers = "SCRIPT_NAME,PATH_INFO"
accesslog = "-"
