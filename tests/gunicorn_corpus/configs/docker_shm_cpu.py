# Patterns: worker-tmp-dir-shm, workers-cpu-count, gthread-threads, chained-log-assign,
#   wsgi-app-in-config, max-requests-jitter, bind-string.
# A container image's config: heartbeat files on /dev/shm, workers from the CPU count (capped
# so the test stays small), logs to the container's stdout.
import multiprocessing

bind = "0.0.0.0:8000"
workers = min(multiprocessing.cpu_count() * 2 + 1, 3)
worker_class = "gthread"
threads = 4
worker_tmp_dir = "/dev/shm"
wsgi_app = "corpus_app:application"
max_requests = 1000
max_requests_jitter = 50
timeout = 30
accesslog = errorlog = "-"
