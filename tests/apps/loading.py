"""Apps for the app-loading tests: factories, non-callables, module defaults."""


def make_app(greeting="hello", *, punct="!"):
    body = f"{greeting}{punct}".encode()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    return app


def failing_factory():
    raise RuntimeError("factory refuses")


not_callable = 42


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"default application"]
