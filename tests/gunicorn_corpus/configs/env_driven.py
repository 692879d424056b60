# Patterns: os-environ-get, numbers-as-strings, int-of-env, bind-fstring-port-env,
#   forwarded-allow-ips-env, loglevel-from-env.
# Every value comes from the environment with a fallback; workers stays a string.
import os

bind = f"0.0.0.0:{os.environ.get('PORT', 8000)}"
workers = os.getenv("CORPUS_WEB_WORKERS", "2")
threads = int(os.environ.get("CORPUS_THREADS", "1"))
timeout = os.environ.get("CORPUS_TIMEOUT", 90)
loglevel = os.getenv("CORPUS_LOG_LEVEL", "info")
accesslog = os.getenv("CORPUS_ACCESS_LOG", "-")
errorlog = os.getenv("CORPUS_ERROR_LOG", "-")
forwarded_allow_ips = os.getenv("CORPUS_FORWARDED_ALLOW_IPS", "*")
