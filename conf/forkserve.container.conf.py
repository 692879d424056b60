# forkserve in a container: conf/Dockerfile copies this file to
# /etc/forkserve/forkserve.conf.py, and the manifests in conf/kubernetes/ are
# written against its numbers (tests/test_kubernetes.py checks that they agree).
#
# The host setup (unix socket behind nginx, pid file, log files) is in
# conf/forkserve.conf.py; in a container the platform does those jobs: the
# network namespace is the container's own, logs go to stdout/stderr, and
# the container runtime knows the pid. Override anything per deployment with
# $FORKSERVE_CMD_ARGS or the container's args, which win over this file.

# The container has an address of its own, so listen on all of it.
bind = ["0.0.0.0:8000"]
# Prometheus scrapes the master here; kept off the Service, which carries only
# port 8000 (see conf/kubernetes/deployment.yaml and hpa.yaml).
metrics_bind = "0.0.0.0:9100"

# workers is deliberately not set: $WEB_CONCURRENCY decides (the Deployment
# sets it from the container's CPU limit), else 1.

# Readiness for the kubelet's probes, answered by the workers without the app.
health_path = "/healthz"
# On SIGTERM the endpoint's removal races the signal; serving on for a few
# seconds while /healthz already says 503 lets every kube-proxy and ingress
# controller drop this pod first. Replaces a preStop sleep.
shutdown_delay = 5
graceful_timeout = 30  # then in-flight requests get this long to finish
timeout = 30  # a request running longer is answered 504 and its worker replaced

max_requests = 10000
max_requests_jitter = 1000

# Longer than ingress-nginx's upstream keepalive_timeout (60 s), so the proxy
# closes idle connections first and never sends a request into a close.
keepalive = 75

# X-Forwarded-* are believed only from 127.0.0.1 by default, which in a pod
# is nobody: give the ingress controller's pod range, for example
# FORKSERVE_CMD_ARGS="--forwarded-allow-ips 10.244.0.0/16", to see client addresses.

# Logs to the container's stdout/stderr, where the runtime collects them.
accesslog = "-"
errorlog = "-"
loglevel = "info"

# The control socket for `forkserve ctl` goes to $XDG_RUNTIME_DIR, which the
# Dockerfile points at /run/forkserve: the one directory forkserve writes,
# an emptyDir in Kubernetes so that the root filesystem can stay read-only.
