"""Every test app wrapped in wsgiref.validate.validator.

The validator checks both sides of PEP 3333 on every call: the environ and
the start_response/write/wsgi.input/wsgi.errors objects forkserve hands
the app, and what the app returns. A violation raises AssertionError inside
the app call, which forkserve answers with a 500 and a logged traceback;
dubious but legal usage gives a WSGIWarning on stderr, i.e. in the log.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from wsgiref.validate import validator

import basic as _basic
import bottle_app as _bottle_app
import flask_app as _flask_app
import hostile as _hostile
import loading as _loading
import supervised as _supervised

from forkserve import demo as _demo

basic = validator(_basic.app)
flask = validator(_flask_app.app)
bottle = validator(_bottle_app.app)
supervised = validator(_supervised.app)
loading = validator(_loading.make_app("validated"))
demo = validator(_demo.app)
hostile = validator(_hostile.app)  # its well-formed routes; the bad ones exist to be refused

DJANGO_PROJECT = Path(__file__).resolve().parent.parent / "djangoproject"


def django_app():
    """Factory (``validated:django_app()``): the test Django project, validated."""
    if str(DJANGO_PROJECT) not in sys.path:
        sys.path.insert(0, str(DJANGO_PROJECT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    from django.core.wsgi import get_wsgi_application

    return validator(get_wsgi_application())
