"""A small Bottle app for forkserve's framework tests.

Static files come from $FORKSERVE_TEST_FILES (default: the working
directory), which the tests point at a temporary directory.
"""

from __future__ import annotations

import hashlib
import os

import bottle
from bottle import HTTPResponse, abort, request, response, static_file

app = bottle.Bottle()


def files_dir() -> str:
    return os.environ.get("FORKSERVE_TEST_FILES", ".")


@app.get("/")
def index():
    return {"framework": "bottle", "pid": os.getpid()}


@app.get("/hello/<name>")
def hello(name):
    return bottle.template("<p>Hello, {{name}}!</p>", name=name)


@app.get("/query")
def query():
    return {
        "tags": request.query.getall("tag"),
        "q": request.query.getunicode("q", default=""),
        "raw": request.query_string,
    }


@app.post("/echo")
def echo():
    body = request.body.read()
    response.content_type = "application/octet-stream"
    response.set_header("X-Sha256", hashlib.sha256(body).hexdigest())
    return body


@app.post("/form")
def form():
    return {"name": request.forms.getunicode("name"), "colour": request.forms.get("colour")}


@app.post("/upload")
def upload():
    uploaded = request.files.get("file")
    data = uploaded.file.read()
    return {
        "filename": uploaded.raw_filename,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "label": request.forms.get("label"),
    }


@app.get("/static/<filename:path>")
def static(filename):
    return static_file(filename, root=files_dir(), mimetype="application/octet-stream")


@app.get("/created")
def created():
    return HTTPResponse({"created": True}, status=201, headers={"Location": "/items/1"})


@app.get("/forbidden")
def forbidden():
    abort(403, "no entry")
