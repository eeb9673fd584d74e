"""The Python floor of the Nimbus benchmark.

A bare HTTP/1.1 keep-alive server on asyncio's Protocol API (the fastest option in the
standard library; http.server is several times slower) that calls the same handler module
Nimbus runs, with a minimal function-URL-like event and context, and answers its JSON.
Usage (cwd = the handler's directory): python3 python_server.py PORT HANDLER
FLOOR_WORKERS=N (default 1): N processes on the port (SO_REUSEPORT), the most the runtime
serves on a host of N cores with no platform in front.
"""

import asyncio
import importlib
import logging
import os
import sys
import time
import uuid
from urllib.parse import parse_qsl

PORT = int(sys.argv[1])
MODULE, _, FUNCTION = sys.argv[2].rpartition(".")
sys.path.insert(0, os.getcwd())
logging.basicConfig(stream=sys.stdout, format="[%(levelname)s]\t%(asctime)s\t%(message)s")
HANDLER = getattr(importlib.import_module(MODULE), FUNCTION)
REASONS = {200: "OK", 500: "Internal Server Error"}


class Context:
    def __init__(self):
        self.aws_request_id = str(uuid.uuid4())
        self.function_name = "floor"
        self.function_version = "$LATEST"
        self._deadline = time.monotonic() + 3

    def get_remaining_time_in_millis(self):
        return int((self._deadline - time.monotonic()) * 1000)


def respond(method, target, headers, body):
    path, _, query = target.partition("?")
    event = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "queryStringParameters": dict(parse_qsl(query)) or None,
        "requestContext": {"http": {"method": method, "path": path}},
        "body": body.decode("utf-8", "replace") if body else None,
        "isBase64Encoded": False,
    }
    try:
        out = HANDLER(event, Context())
        status, out_headers, out_body = out["statusCode"], out.get("headers") or {}, out.get("body") or ""
    except Exception as e:  # noqa: BLE001 - answered as a 500 like a platform would
        status, out_headers, out_body = 500, {"content-type": "text/plain"}, repr(e)
    data = out_body.encode()
    head = "HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, "Unknown"))
    head += "".join("%s: %s\r\n" % kv for kv in out_headers.items())
    head += "content-length: %d\r\n\r\n" % len(data)
    return head.encode("latin-1") + data


class HttpProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""

    def data_received(self, data):
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = self.buf[:end].decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
            length = int(headers.get("content-length") or 0)
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            self.transport.write(respond(method, target, headers, body))
            if headers.get("connection", "").lower() == "close":
                self.transport.close()
                return


async def main(reuse_port):
    server = await asyncio.get_running_loop().create_server(
        HttpProtocol, "127.0.0.1", PORT, reuse_port=reuse_port
    )
    async with server:
        await server.serve_forever()


WORKERS = int(os.environ.get("FLOOR_WORKERS") or 1)
if WORKERS > 1:
    parent = os.getpid()
    for _ in range(WORKERS - 1):
        if os.fork() == 0:
            # The bench stops the floor by killing the first process: the others follow.
            import ctypes
            import signal

            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
            if os.getppid() != parent:
                os._exit(0)
            break
asyncio.run(main(WORKERS > 1))
