"""The peers benchmark's WSGI app: answers the pid of the worker that
served the request, in decimal, as a text body (tools/thunder-loadgen -H reads
it to count accepts per worker)."""
import os


def application(environ, start_response):
    body = b"%d\n" % os.getpid()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
