"""forkserve: a pre-fork, multi-process WSGI server.

Follow one request through the modules in this order:

1. ``cli``         the command line; turns errors into exit codes
2. ``settings``    the one registry of settings (flags, config names, help,
   and forkserve's answer to each of Gunicorn's); ``configfile`` reads
   Python (as Gunicorn does) and TOML config files
3. ``sockets``     parse ``--bind`` values; create, bind and listen
4. ``master``      fork workers, handle signals, reap, respawn
   (``lifecycle``: each worker's record and its state table;
   ``process``, ``heartbeat``: forking and proof of life;
   ``template``: --preload's template process the workers fork from)
5. ``worker``      after the fork: load the app, epoll loop, accept; owns
   the request count and the closing flag
   (``balance``: connections spread evenly over the workers, and the
   ``Balancer`` that watches the listening sockets;
   ``service``: the frozen configuration connections read, built by
   ``Worker.make_service``;
   ``threads``: --threads; ``gevent_worker``: -k gevent, a greenlet per
   connection around the same ``Connection``)
6. ``connection``  one client socket's phases, never blocking: request
   head and early body in, keep-alive, drain, linger, timeouts
7. ``http``        sans-IO protocol: ``parser`` + ``body`` (requests in),
   ``response`` (response heads out), ``errors``, ``grammar``,
   ``memo`` (remembered checks)
8. ``handler``     one request: environ, proxy headers, hooks, the app
   call, its error status, the access log
9. ``environ``     ``build_environ()``: parsed request -> WSGI environ
10. ``streams``    ``wsgi.input``
11. ``wsgi``       one app call: start_response, write(), close(), file_wrapper
12. ``transport``  the socket while the app runs: blocking body reads and
    response writes, each bounded; sendfile; TLS quirks; one writer
    per response with --threads

``apploader`` turns "module:app" (or a PasteDeploy file) into a callable,
``logs`` owns the error and access logs (Gunicorn's logger names too),
``statsd`` sends Gunicorn's StatsD metrics, ``proxy`` decides what a
trusted proxy may tell us, ``endpoints`` runs the master's own small
servers, ``control`` answers ``forkserve ctl`` (the client and ``top``:
``ctl``) over the master's control socket, and ``demo`` is the app served
when none is named.
"""

__version__ = "0.1.0"
