# Patterns: secure-scheme-headers-three, forwarded-allow-ips-star, access-log-format-xff,
#   limit-request-zero, user-group-none, tmp-upload-dir-none.
# Behind a load balancer that may send any of the three usual scheme headers.
bind = "0.0.0.0:8000"
workers = 1
worker_class = "sync"
timeout = 120
keepalive = 2
max_requests = 1000
max_requests_jitter = 100
user = None
group = None
tmp_upload_dir = None
limit_request_line = 0
limit_request_fields = 200
limit_request_field_size = 0
forwarded_allow_ips = "*"
secure_scheme_headers = {
    "X-FORWARDED-PROTOCOL": "ssl",
    "X-FORWARDED-PROTO": "https",
    "X-FORWARDED-SSL": "on",
}
accesslog = "-"
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" "%({x-forwarded-for}i)s"'
