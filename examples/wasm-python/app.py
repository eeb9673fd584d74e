"""A wasi-http function in Python: a component of the standard wasi:http/proxy world,
built by `nimbus deploy` with componentize-py (`pip install componentize-py`).

`GET /?name=you` (or `/py/hello/you`) answers JSON; `POST` answers with the body's length
and its first bytes. `wit_world` is the module componentize-py generates for the world;
`componentize-py -d ../../wit/wasi-http -w wasi:http/proxy@0.2.12 bindings .` writes it
out for an editor.
"""

import json
import os
import sys
from urllib.parse import parse_qs, urlsplit

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports.streams import StreamError_Closed
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    Method_Get,
    Method_Post,
    Method_Put,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)

CHUNK = 4096  # blocking_write_and_flush writes at most this much at a time


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        target = request.path_with_query() or "/"
        url = urlsplit(target)
        method = request.method()
        if isinstance(method, (Method_Post, Method_Put)):
            body = read_body(request)
            reply = {"received": len(body), "start": body[:32].decode("utf-8", "replace")}
        elif isinstance(method, Method_Get):
            name = parse_qs(url.query).get("name", [""])[0]
            if not name and url.path.startswith("/py/hello/"):
                name = url.path[len("/py/hello/"):]
            greeting = os.environ.get("GREETING", "Hello")
            reply = {"message": f"{greeting}, {name or 'world'}!", "runtime": "python-wasm",
                     "python": sys.version.split()[0]}
        else:
            send(response_out, 405, b'{"message": "method not allowed"}')
            return
        # stdout and stderr lines go to the function's log
        print(f"wasm-python: {type(method).__name__[7:].upper()} {target}", flush=True)
        send(response_out, 200, json.dumps(reply).encode())


def read_body(request: IncomingRequest) -> bytes:
    body = request.consume()
    data = bytearray()
    with body.stream() as stream:
        while True:
            try:
                data += stream.blocking_read(65536)
            except Err as e:
                if isinstance(e.value, StreamError_Closed):
                    break
                raise
    return bytes(data)


def send(response_out: ResponseOutparam, status: int, payload: bytes) -> None:
    response = OutgoingResponse(Fields.from_list([("content-type", b"application/json")]))
    response.set_status_code(status)
    body = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    with body.write() as stream:
        for i in range(0, len(payload), CHUNK):
            stream.blocking_write_and_flush(payload[i:i + CHUNK])
    OutgoingBody.finish(body, None)
