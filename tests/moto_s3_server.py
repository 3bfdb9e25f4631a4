"""moto's standalone server for the tests' S3, serving on a listening socket it inherits
(`python moto_s3_server.py FD`): the tests bind the socket first, so its port is theirs before the
server starts (the session's endpoint is in the environment before any forkserver starts:
conftest.py).

Owns: one change to moto's request dispatch, and serving moto's application (as `moto.server.main`
builds it) on that socket; nothing else. moto 5.2's server looks up, on every request, whether the
Host header names one of its service packages by listing moto's ~200 package folders
(`moto.backends.list_of_moto_modules`: a listdir and an isdir each); measured here, that was half
of the server's CPU (~2.5 of ~5 ms a request) and ~23 CPU-s of a default test run. The folders do
not change while the server runs, so the list is read once. S3's behaviour (conditional puts
included) is moto's own.
Must not touch: snakebatch (this is the tests' server, not a client).
"""

import os
import socket
import sys

from moto import backends
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

_MODULES = tuple(backends.list_of_moto_modules())
backends.list_of_moto_modules = lambda: _MODULES


def serve(fd: int) -> None:
    with socket.socket(fileno=os.dup(fd)) as listener:
        host, port = listener.getsockname()[:2]
    os.environ.setdefault("MOTO_PORT", str(port))  # as moto.server.main sets it
    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True
    make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler, fd=fd).serve_forever()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
