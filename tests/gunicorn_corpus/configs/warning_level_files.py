# Patterns: loglevel-warning, capture-output-string, preload-app, print-at-import,
#   side-effect-file-at-import, log-files-relative.
# Only warnings in the error log (so no "Listening at:" line), the app preloaded, and a
# config that prints and writes a file when it is read.
with open("config-was-read.txt", "w+") as fd:
    fd.write("read by the server")
print("corpus: warning_level_files read")

bind = "0.0.0.0:5005"
workers = 2
preload_app = True
loglevel = "warning"
capture_output = "True"
errorlog = "gunicorn-error.log"
accesslog = "gunicorn-access.log"
