"""A small Flask app for forkserve's framework tests.

Files for ``/files/<name>`` come from $FORKSERVE_TEST_FILES (default: the
working directory), which the tests point at a temporary directory.
"""

from __future__ import annotations

import hashlib
import io
import os

from flask import Flask, abort, jsonify, request, send_file, stream_with_context
from werkzeug.utils import safe_join

app = Flask(__name__)
# A request-size cap, as production apps set. It also makes Werkzeug read
# wsgi.input in bounded pieces.
app.config["MAX_CONTENT_LENGTH"] = 16 * 1024 * 1024


def files_dir() -> str:
    return os.environ.get("FORKSERVE_TEST_FILES", ".")


@app.get("/")
def index():
    return jsonify(framework="flask", pid=os.getpid())


@app.get("/args")
def args():
    return jsonify({key: request.args.getlist(key) for key in request.args})


@app.post("/json")
def echo_json():
    data = request.get_json()
    return jsonify(received=data, content_type=request.content_type)


@app.route("/form", methods=["GET", "POST"])
def form():
    if request.method == "GET":
        return '<form method="post"><input name="name"><input name="qty"></form>'
    name = request.form["name"]
    qty = int(request.form.get("qty", "1"))
    return jsonify(name=name, qty=qty, total=qty * 3)


@app.post("/sha256")
def sha256():
    digest = hashlib.sha256()
    size = 0
    while chunk := request.stream.read(65536):
        digest.update(chunk)
        size += len(chunk)
    return jsonify(sha256=digest.hexdigest(), size=size)


@app.post("/upload")
def upload():
    uploaded = request.files["file"]
    data = uploaded.read()
    return jsonify(filename=uploaded.filename, size=len(data), sha256=hashlib.sha256(data).hexdigest())


@app.get("/stream")
def stream():
    count = request.args.get("count", 5, type=int)

    @stream_with_context
    def generate():
        # The request context stays usable while the server iterates the body.
        for i in range(count):
            yield f"{request.path} chunk {i}\n"

    return app.response_class(generate(), mimetype="text/plain")


@app.get("/forever")
def forever():
    """Streams until the client goes away; then the server's close() runs the cleanup."""
    marker = request.headers["X-Marker"]

    @stream_with_context
    def generate():
        try:
            while True:
                yield b"x" * 65536
        finally:
            with open(marker, "w") as f:
                f.write("cleaned up")

    return app.response_class(generate(), mimetype="application/octet-stream")


@app.get("/headers")
def headers():
    return jsonify(headers=dict(request.headers), cookies=request.cookies, remote_addr=request.remote_addr)


@app.get("/files/<name>")
def files(name):
    path = safe_join(files_dir(), name)
    if path is None or not os.path.isfile(path):
        abort(404)
    return send_file(path, mimetype="application/octet-stream")


@app.get("/report.csv")
def report():
    # An in-memory file: not a regular file, so the server has to iterate it.
    rows = "".join(f"{i},{i * i}\n" for i in range(1000))
    return send_file(
        io.BytesIO(rows.encode()), mimetype="text/csv", download_name="report.csv", as_attachment=True
    )


@app.get("/teapot")
def teapot():
    abort(418)


@app.get("/boom")
def boom():
    raise RuntimeError("flask view failed on purpose")


@app.errorhandler(404)
def not_found(error):
    return jsonify(error="not found", path=request.path), 404
