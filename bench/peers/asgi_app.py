"""The peers benchmark's ASGI app (uvicorn, gunicorn's uvicorn worker):
answers the pid of the worker that served the request, like wsgi_app.py."""
import os


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b"%d\n" % os.getpid()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
