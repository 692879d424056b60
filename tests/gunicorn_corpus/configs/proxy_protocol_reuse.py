# Patterns: proxy-protocol, reuse-port, forwarded-allow-ips-or, bind-list-tcp-and-unix,
#   true-false-aliases, timeout-large.
# A config generated from a template: PROXY protocol detection on, SO_REUSEPORT, and
# values written as `"" or "*"`.
true = True
false = False

proxy_protocol = true
bind = [":8081", "unix:/tmp/corpus-dataserver.sock"]
workers = "1" or 3  # noqa: SIM222
preload_app = false
reuse_port = false  # with true, Gunicorn 27 binds per worker: no shared port 0
timeout = 1800
forwarded_allow_ips = "" or "*"  # noqa: SIM222
accesslog = "/dev/stderr"
