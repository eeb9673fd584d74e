"""Nimbus Python bootstrap: speaks the Lambda Runtime API (2018-06-01).

Started by the server as ``python3 /abs/runtimes/python/bootstrap.py`` with
cwd = the function's code directory and the standard Lambda environment
(AWS_LAMBDA_RUNTIME_API=host:port, _HANDLER=module.function, LAMBDA_TASK_ROOT, ...),
or, as a stem cell, with only _NIMBUS_STEM=1 and the Runtime API address: it then
waits (``specialize``) for the function's environment before loading the handler.
Python 3.9+, standard library only.

Exit codes: 1 after posting an init error (as Lambda's Python runtime does),
1 when the Runtime API is unusable (bad env, connection failure, non-200 from
next). A handler that calls sys.exit() ends the process with its own code.

Behaviour follows aws-lambda-python-runtime-interface-client: handler
resolution, error bodies {errorMessage, errorType, requestId, stackTrace},
the LambdaContext object, event unmarshalling only for application/json,
bytes results posted as application/unknown, and the logging format
``[LEVEL]\\tTIME\\tREQUEST-ID\\tmessage``.

Nimbus's own extension: a handler that returns a generator streams its response
(``Lambda-Runtime-Function-Response-Mode: streaming``), one chunk per item yielded
(bytes, str as UTF-8, anything else as JSON); a dict yielded first is the HTTP
prelude (statusCode, headers, cookies) a function URL answers with.
"""

import importlib
import json
import logging
import os
import sys
import time
import traceback
import types

API_PREFIX = "/2018-06-01/runtime"
_THIS_FILE = os.path.abspath(__file__)
_REQUEST_ID = None


# --------------------------------------------------------------- utilities --


def _set_invocation_var(name, value):
    """Puts a variable of the invocation (its trace headers) in os.environ, or takes it
    out (value None), without putenv: CPython's putenv is setenv(3), and glibc keeps every
    value ever set (an instance grew ~250 bytes per invocation until its memory limit
    killed it). os.environ and os.getenv see it; the C environment, and so a subprocess
    started without env=, does not."""
    environ = os.environ
    data = getattr(environ, "_data", None)
    if not isinstance(data, dict):
        # Not CPython's os._Environ: the plain way.
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
        return
    key = environ.encodekey(name)
    if value is None:
        data.pop(key, None)
    else:
        data[key] = environ.encodevalue(value)


def _die(msg):
    sys.stderr.write("nimbus python bootstrap: %s\n" % msg)
    sys.stderr.flush()
    sys.exit(1)


class FaultException(Exception):
    MARSHAL_ERROR = "Runtime.MarshalError"
    UNMARSHAL_ERROR = "Runtime.UnmarshalError"
    USER_CODE_SYNTAX_ERROR = "Runtime.UserCodeSyntaxError"
    HANDLER_NOT_FOUND = "Runtime.HandlerNotFound"
    IMPORT_MODULE_ERROR = "Runtime.ImportModuleError"
    BUILT_IN_MODULE_CONFLICT = "Runtime.BuiltInModuleConflict"
    MALFORMED_HANDLER_NAME = "Runtime.MalformedHandlerName"
    LAMBDA_CONTEXT_UNMARSHAL_ERROR = "Runtime.LambdaContextUnmarshalError"

    def __init__(self, exception_type, msg, trace=None):
        Exception.__init__(self, msg)
        self.msg = msg
        self.exception_type = exception_type
        self.trace = trace


class _Encoder(json.JSONEncoder):
    """json with Lambda's Decimal support (Decimal is written as a number)."""

    def default(self, o):
        # decimal is imported lazily: if nobody imported it, o is no Decimal.
        decimal = sys.modules.get("decimal")
        if decimal is not None and isinstance(o, decimal.Decimal):
            if o.is_nan():
                return float("nan")
            if o == o.to_integral_value() and o.is_finite():
                return int(o)
            return float(o)
        return json.JSONEncoder.default(self, o)


_ENCODER = _Encoder()


def to_json(obj):
    return _ENCODER.encode(obj)


def make_error(error_message, error_type, stack_trace, invoke_id=None):
    return {
        "errorMessage": error_message if error_message else "",
        "errorType": error_type if error_type else "",
        "requestId": invoke_id if invoke_id is not None else "",
        "stackTrace": stack_trace if stack_trace else [],
    }


def _user_frames(tb):
    """Traceback frames with the leading frames of this bootstrap dropped."""
    frames = traceback.extract_tb(tb)
    for i, f in enumerate(frames):
        if os.path.abspath(f.filename) != _THIS_FILE:
            return frames[i:]
    return frames


def build_fault_result(exc_info, invoke_id=None):
    etype, value, tb = exc_info
    return make_error(str(value), etype.__name__, traceback.format_list(_user_frames(tb)), invoke_id)


# ----------------------------------------------------------------- logging --


def _replace_indent(line):
    n = len(line) - len(line.lstrip(" "))
    return "\u00a0" * n + line[n:]


# AWS_LAMBDA_LOG_FORMAT=JSON (LoggingConfig.LogFormat): logging records become one JSON
# object per line as Lambda's runtime writes them ({timestamp, level, message, logger,
# requestId, ...extra fields}); print() output stays plain text. Read by
# setup_io_and_logging (a stem cell learns its environment late).
_JSON_LOGS = False


def log_error(error_result):
    """Lambda's error log: text, one line with parts joined by \\r; JSON, one object."""
    if _JSON_LOGS:
        line = dict(
            timestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            log_level="ERROR",
            **error_result
        )
        sys.stdout.write(json.dumps(line, ensure_ascii=False).replace("\n", "\r") + "\n")
        sys.stdout.flush()
        return
    desc = "[ERROR]"
    etype = error_result.get("errorType")
    if etype:
        desc += " " + etype
    emsg = error_result.get("errorMessage")
    if emsg:
        if etype:
            desc += ":"
        desc += " " + emsg
    lines = [desc]
    stack = error_result.get("stackTrace")
    if stack is not None:
        lines.append("Traceback (most recent call last):")
        for element in stack:
            if element == "":
                lines.append("")
            else:
                lines.extend(_replace_indent(l) for l in element.splitlines())
    sys.stdout.write("\r".join(lines).replace("\n", "\r") + "\n")
    sys.stdout.flush()


class _RequestIdFilter(logging.Filter):
    def filter(self, record):
        record.aws_request_id = _REQUEST_ID if _JSON_LOGS else (_REQUEST_ID or "")
        return True


# LogRecord attributes that are not extra fields of a JSON line.
_RESERVED_FIELDS = frozenset(
    "name msg args levelname levelno pathname filename module exc_info exc_text "
    "stack_info lineno funcName created msecs relativeCreated thread threadName "
    "processName process taskName aws_request_id".split()
)


class _JsonFormatter(logging.Formatter):
    """Lambda's JSON log line for a logging record."""

    def format(self, record):
        levelno = min(50, max(0, record.levelno)) // 10 * 10
        created = time.gmtime(record.created)
        exc = record.exc_info
        result = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", created) + ".%03dZ" % int(record.msecs),
            "level": logging.getLevelName(levelno),
            "message": record.getMessage(),
            "logger": record.name,
            "stackTrace": traceback.format_tb(exc[2]) if exc else None,
            "errorType": exc[0].__name__ if exc else None,
            "errorMessage": str(exc[1]) if exc else None,
            "requestId": getattr(record, "aws_request_id", None),
            "location": "%s:%s:%s" % (record.pathname, record.funcName, record.lineno) if exc else None,
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED_FIELDS and key not in result:
                result[key] = value
        result = {k: v for k, v in result.items() if v is not None}
        return json.dumps(result, ensure_ascii=False, default=str)


class _LambdaLogHandler(logging.Handler):
    """Writes each record as one stdout line (embedded newlines become \\r)."""

    def emit(self, record):
        try:
            msg = self.format(record)
            if "\n" in msg:
                msg = msg.replace("\n", "\r")
            stream = sys.stdout
            stream.write(msg + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


def setup_io_and_logging():
    global _JSON_LOGS
    _JSON_LOGS = (os.environ.get("AWS_LAMBDA_LOG_FORMAT") or "").upper() == "JSON"
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)
        except Exception:
            pass
    logging.Formatter.converter = time.gmtime
    handler = _LambdaLogHandler()
    if _JSON_LOGS:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(
                "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s",
                "%Y-%m-%dT%H:%M:%S",
            )
        )
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = (os.environ.get("AWS_LAMBDA_LOG_LEVEL") or "").upper()
    if level in ("TRACE", "DEBUG", "INFO", "WARN", "WARNING", "ERROR", "FATAL", "CRITICAL"):
        root.setLevel({"TRACE": "DEBUG", "WARN": "WARNING", "FATAL": "CRITICAL"}.get(level, level))


# ---------------------------------------------------------------- context --


class CognitoIdentity(object):
    __slots__ = ["cognito_identity_id", "cognito_identity_pool_id"]

    def __repr__(self):
        return "CognitoIdentity([cognito_identity_id=%s,cognito_identity_pool_id=%s])" % (
            self.cognito_identity_id,
            self.cognito_identity_pool_id,
        )


class Client(object):
    __slots__ = ["installation_id", "app_title", "app_version_name", "app_version_code", "app_package_name"]

    def __repr__(self):
        return "Client([%s])" % ",".join("%s=%s" % (f, getattr(self, f)) for f in self.__slots__)


class ClientContext(object):
    __slots__ = ["custom", "env", "client"]

    def __repr__(self):
        return "ClientContext([custom=%s,env=%s,client=%s])" % (self.custom, self.env, self.client)


def _obj_from_dict(cls, d):
    if d is None:
        return None
    obj = cls()
    get = d.get if isinstance(d, dict) else (lambda _k, _d=None: None)
    for field in cls.__slots__:
        setattr(obj, field, get(field, None))
    return obj


def _memory_mb():
    raw = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
    try:
        return int(raw)
    except (TypeError, ValueError):
        return raw


class LambdaContext(object):
    def __init__(self, invoke_id, client_context, cognito_identity, epoch_deadline_time_in_ms,
                 invoked_function_arn=None, tenant_id=None):
        self.aws_request_id = invoke_id
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        self.memory_limit_in_mb = _memory_mb()
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.invoked_function_arn = invoked_function_arn
        self.tenant_id = tenant_id
        self.client_context = _obj_from_dict(ClientContext, client_context)
        if self.client_context is not None:
            self.client_context.client = _obj_from_dict(Client, self.client_context.client)
        self.identity = _obj_from_dict(CognitoIdentity, {})
        if isinstance(cognito_identity, dict):
            self.identity.cognito_identity_id = cognito_identity.get("cognitoIdentityId")
            self.identity.cognito_identity_pool_id = cognito_identity.get("cognitoIdentityPoolId")
        self._epoch_deadline_time_in_ms = epoch_deadline_time_in_ms

    def get_remaining_time_in_millis(self):
        delta = self._epoch_deadline_time_in_ms - int(time.time() * 1000)
        return delta if delta > 0 else 0

    def log(self, msg):
        sys.stdout.write(str(msg))

    def __repr__(self):
        return (
            "LambdaContext([aws_request_id=%s,log_group_name=%s,log_stream_name=%s,function_name=%s,"
            "memory_limit_in_mb=%s,function_version=%s,invoked_function_arn=%s,client_context=%s,"
            "identity=%s,tenant_id=%s])"
            % (self.aws_request_id, self.log_group_name, self.log_stream_name, self.function_name,
               self.memory_limit_in_mb, self.function_version, self.invoked_function_arn,
               self.client_context, self.identity, self.tenant_id)
        )


def _parse_json_header(value, name):
    try:
        return json.loads(value)
    except Exception as e:
        raise FaultException(
            FaultException.LAMBDA_CONTEXT_UNMARSHAL_ERROR, "Unable to parse {} JSON: {}".format(name, e)
        )


# ---------------------------------------------------- Runtime API client --


class _Headers(dict):
    """Response headers: names compared without case (stored lower-case)."""

    def get(self, name, default=None):
        return dict.get(self, name.lower(), default)

    def __getitem__(self, name):
        return dict.__getitem__(self, name.lower())

    def __contains__(self, name):
        return dict.__contains__(self, name.lower())


def _warn_if_refused(path, status, _headers, data):
    """Says on stderr when the Runtime API refused a post."""
    if not 200 <= status < 300:
        sys.stderr.write("nimbus python bootstrap: POST %s returned %d: %s\n"
                         % (path, status, data[:500].decode("utf-8", "replace")))
        sys.stderr.flush()


# Nimbus's extension of the Runtime API: a result or error posted with this header is
# answered, once accepted, with the next invocation (a refused one with its refusal), so an
# invocation costs one exchange instead of a post, its 202 and a GET next.
ASK_NEXT = {"Nimbus-Runtime-Next": "1"}


class RuntimeClient(object):
    """One persistent HTTP/1.1 connection to the Runtime API, with a minimal client: a
    request is one write, and a posted result is not waited for: it goes out with
    ASK_NEXT, and its answer, read when the loop asks for the next invocation, is that
    invocation. The Runtime API answers with Content-Length."""

    def __init__(self, address):
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit():
            _die("AWS_LAMBDA_RUNTIME_API must be host:port (got %r)" % address)
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        self.host = host
        self.port = int(port)
        self.sock = None
        self.rfile = None
        self.answered = 0  # answers read on the current connection
        self.unanswered = []  # paths of posts whose answers were not read yet
        self.asked_next = None  # the path of a post (ASK_NEXT) whose answer is the next invocation

    def _connect(self):
        import socket

        self.close()
        self.sock = socket.create_connection((self.host, self.port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = self.sock.makefile("rb")
        self.answered = 0

    def close(self):
        if self.sock is not None:
            try:
                self.rfile.close()
                self.sock.close()
            except OSError:
                pass
        self.sock = None

    def _send(self, method, path, body=b"", headers=None):
        head = "%s %s HTTP/1.1\r\nHost: %s\r\n" % (method, path, self.host)
        if headers:
            for k, v in headers.items():
                head += "%s: %s\r\n" % (k, v)
        if self.sock is None:
            self._connect()
        self.sock.sendall(head.encode("latin-1") + b"\r\n" + body)

    def _read(self):
        line = self.rfile.readline(65537)
        if not line:
            raise ConnectionResetError("the Runtime API closed the connection")
        status = int(line.split(None, 2)[1])
        headers = _Headers()
        while True:
            h = self.rfile.readline(65537)
            if h in (b"\r\n", b"\n", b""):
                break
            name, _, value = h.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if "transfer-encoding" in headers:
            raise ValueError("unsupported Transfer-Encoding from the Runtime API: %s" % headers["transfer-encoding"])
        n = int(headers.get("content-length") or 0)
        data = self.rfile.read(n) if n else b""
        if len(data) < n:
            raise ConnectionResetError("the Runtime API closed the connection mid-answer")
        self.answered += 1
        return status, headers, data

    def _drain(self):
        """Reads the answers of the posts sent so far; warns about refusals."""
        while self.unanswered:
            path = self.unanswered.pop(0)
            _warn_if_refused(path, *self._read())

    def _request(self, method, path, body=b"", headers=None):
        """Sends a request and reads its answer (after those of earlier posts)."""
        for attempt in (0, 1):
            # A kept-alive connection the server closed while idle: sent again once on a
            # fresh one (never with posts in flight: they may have been taken).
            retry = attempt == 0 and self.answered > 0 and not self.unanswered
            try:
                self._send(method, path, body, headers)
                self._drain()
                return self._read()
            except OSError:  # ConnectionError and BrokenPipeError among them
                self.close()
                if not retry:
                    raise

    def _post(self, path, body, content_type, extra_headers=None, wait=False):
        if isinstance(body, str):
            body = body.encode("utf-8")
        headers = {"Content-Type": content_type, "Content-Length": str(len(body))}
        if extra_headers:
            headers.update(extra_headers)
        try:
            if wait:
                _warn_if_refused(path, *self._request("POST", path, body, headers))
            else:
                self._send("POST", path, body, headers)
                if extra_headers is ASK_NEXT:
                    self.asked_next = path
                else:
                    self.unanswered.append(path)
        except Exception as e:
            _die("POST %s failed: %r" % (path, e))

    def next(self):
        if self.asked_next is not None:
            path, self.asked_next = self.asked_next, None
            try:
                self._drain()
                answer = self._read()
            except Exception as e:
                _die("POST %s failed: %r" % (path, e))
            if answer[0] == 200:
                return answer[1], answer[2]
            # Refused: said on stderr, and the next invocation is asked for as usual.
            _warn_if_refused(path, *answer)
        try:
            status, headers, data = self._request("GET", API_PREFIX + "/invocation/next")
        except Exception as e:
            _die("GET next failed: %r" % (e,))
        if status != 200:
            _die("GET next returned %d: %s" % (status, data[:500].decode("utf-8", "replace")))
        return headers, data

    def post_result(self, invoke_id, body, content_type):
        self._post("%s/invocation/%s/response" % (API_PREFIX, invoke_id), body, content_type, ASK_NEXT)

    def post_stream(self, invoke_id, first, rest):
        """Streams a generator handler's response (Nimbus's own extension): a chunked POST
        with `Lambda-Runtime-Function-Response-Mode: streaming`, one chunk per item as it is
        yielded. `first` is the first item already taken from the generator `rest`; when it
        is a dict it is the HTTP-integration prelude ({"statusCode", "headers", "cookies"})
        and the body is what follows. An exception mid-stream goes out in the trailers
        Lambda-Runtime-Function-Error-Type / -Body (base64 of the error JSON)."""
        path = "%s/invocation/%s/response" % (API_PREFIX, invoke_id)
        prelude = isinstance(first, dict)
        content_type = HTTP_INTEGRATION if prelude else "application/octet-stream"
        headers = {
            "Content-Type": content_type,
            "Lambda-Runtime-Function-Response-Mode": "streaming",
            "Transfer-Encoding": "chunked",
            "Trailer": "Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body",
        }

        def chunk(data):
            if data:
                self.sock.sendall(b"%x\r\n" % len(data) + data + b"\r\n")

        trailers = b""
        try:
            self._send("POST", path, b"", headers)
            if prelude:
                chunk(_ENCODER.encode(first).encode("utf-8") + b"\0" * 8)
            else:
                chunk(_stream_bytes(first))
            try:
                for item in rest:
                    chunk(_stream_bytes(item))
            except Exception:
                error_result = build_fault_result(sys.exc_info(), invoke_id)
                log_error(error_result)
                import base64

                body = base64.b64encode(to_json(error_result).encode("utf-8")).decode("ascii")
                trailers = ("Lambda-Runtime-Function-Error-Type: %s\r\nLambda-Runtime-Function-Error-Body: %s\r\n"
                            % (error_result["errorType"], body)).encode("latin-1")
            self.sock.sendall(b"0\r\n" + trailers + b"\r\n")
            self.unanswered.append(path)
        except OSError as e:
            # The Runtime API ended the stream (e.g. past the 20 MiB limit: it answered 413
            # and closed): the invocation is over; the next request reconnects.
            sys.stderr.write("nimbus python bootstrap: streaming the response stopped: %r\n" % (e,))
            self.close()

    def post_error(self, invoke_id, error_result):
        self._post("%s/invocation/%s/error" % (API_PREFIX, invoke_id), to_json(error_result),
                   "application/json", ASK_NEXT)

    def post_init_error(self, error_result):
        self._post(API_PREFIX + "/init/error", to_json(error_result), "application/json",
                   {"Lambda-Runtime-Function-Error-Type": error_result["errorType"]}, wait=True)


# --------------------------------------------------------- handler loading --


def get_handler(handler):
    try:
        modname, fname = handler.rsplit(".", 1)
    except ValueError as e:
        raise FaultException(FaultException.MALFORMED_HANDLER_NAME, "Bad handler '{}': {}".format(handler, e))
    if not modname or not fname or ".." in handler or modname.startswith("/") or modname.endswith("/"):
        raise FaultException(FaultException.MALFORMED_HANDLER_NAME,
                             "Bad handler '{}': use MODULE.FUNCTION, for example app.handler".format(handler))
    try:
        if modname.split(".")[0] in sys.builtin_module_names:
            raise FaultException(FaultException.BUILT_IN_MODULE_CONFLICT,
                                 "Cannot use built-in module {} as a handler module".format(modname))
        m = importlib.import_module(modname.replace("/", "."))
    except ImportError as e:
        raise FaultException(FaultException.IMPORT_MODULE_ERROR,
                             "Unable to import module '{}': {}".format(modname, e))
    except SyntaxError as e:
        trace = ['  File "%s" Line %s\n    %s' % (e.filename, e.lineno, e.text)]
        raise FaultException(FaultException.USER_CODE_SYNTAX_ERROR,
                             "Syntax error in module '{}': {}".format(modname, e), trace)
    try:
        return getattr(m, fname)
    except AttributeError:
        raise FaultException(FaultException.HANDLER_NOT_FOUND,
                             "Handler '{}' missing on module '{}'".format(fname, modname))


# ------------------------------------------------------------ invocations --


HTTP_INTEGRATION = "application/vnd.awslambda.http-integration-response"


def _stream_bytes(item):
    """What a generator handler yields, as bytes: bytes as they are, str as UTF-8, anything
    else as JSON."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    if isinstance(item, str):
        return item.encode("utf-8")
    return _ENCODER.encode(item).encode("utf-8")


def handle_event(client, request_handler, headers, body):
    invoke_id = headers.get("Lambda-Runtime-Aws-Request-Id")
    error_result = None
    try:
        cc = headers.get("Lambda-Runtime-Client-Context")
        ci = headers.get("Lambda-Runtime-Cognito-Identity")
        try:
            deadline = int(headers.get("Lambda-Runtime-Deadline-Ms") or 0)
        except ValueError:
            deadline = 0
        context = LambdaContext(
            invoke_id,
            _parse_json_header(cc, "Client Context") if cc else None,
            _parse_json_header(ci, "Cognito Identity") if ci else None,
            deadline,
            headers.get("Lambda-Runtime-Invoked-Function-Arn"),
            headers.get("Lambda-Runtime-Aws-Tenant-Id"),
        )
        if headers.get("Content-Type") == "application/json":
            try:
                event = json.loads(body)
            except Exception as e:
                raise FaultException(FaultException.UNMARSHAL_ERROR, "Unable to unmarshal input: {}".format(e))
        else:
            event = body
        response = request_handler(event, context)
        if isinstance(response, types.GeneratorType):
            # Nimbus's own extension: a generator handler streams its response. An
            # exception before the first item is an ordinary error.
            try:
                first = next(response)
            except StopIteration:
                first = b""
            client.post_stream(invoke_id, first, response)
            return
        if isinstance(response, bytes):
            result, content_type = response, "application/unknown"
        else:
            try:
                result, content_type = _ENCODER.encode(response), "application/json"
            except Exception as e:
                raise FaultException(FaultException.MARSHAL_ERROR, "Unable to marshal response: {}".format(e))
    except FaultException as e:
        error_result = make_error(e.msg, e.exception_type, e.trace, invoke_id)
    except Exception:
        error_result = build_fault_result(sys.exc_info(), invoke_id)

    if error_result is not None:
        log_error(error_result)
        client.post_error(invoke_id, error_result)
    else:
        client.post_result(invoke_id, result, content_type)


STEM_PATH = API_PREFIX + "/nimbus/stem/specialize"


def specialize(client):
    """A stem cell (started with _NIMBUS_STEM=1 before any function was known) waits
    here until the server makes it an instance of a function: the answer carries the
    function's whole environment and its task root (already mounted)."""
    try:
        status, _, data = client._request("GET", STEM_PATH)
    except Exception as e:
        _die("GET %s failed: %r" % (STEM_PATH, e))
    if status != 200:
        _die("GET %s returned %d: %s" % (STEM_PATH, status, data[:500].decode("utf-8", "replace")))
    spec = json.loads(data)
    os.environ.clear()
    os.environ.update(spec["env"])
    os.chdir(spec["taskRoot"])
    # The interpreter read PYTHONPATH when the stem cell started, before the function
    # (and its layers' /opt/python paths) was known: add its entries now, in order.
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
    sys.path[1:1] = extra
    importlib.invalidate_caches()


def fork_workers(client):
    """With AWS_LAMBDA_MAX_CONCURRENCY = N > 1 (the function's instance_concurrency), N
    processes serve invocations, one each at a time, as on Lambda Managed Instances:
    forked from this one once the handler is loaded, each with its own Runtime API
    connection. When one exits, this one does too (the server sees the instance end)."""
    try:
        n = int(os.environ.get("AWS_LAMBDA_MAX_CONCURRENCY") or 1)
    except ValueError:
        n = 1
    if n <= 1:
        return
    import threading

    client.close()
    sys.stdout.flush()
    sys.stderr.flush()
    workers = []
    for _ in range(n - 1):
        pid = os.fork()
        if pid == 0:
            return
        workers.append(pid)

    def watch(pid):
        os.waitpid(pid, 0)
        os._exit(1)

    for pid in workers:
        threading.Thread(target=watch, args=(pid,), daemon=True).start()


def main():
    global _REQUEST_ID
    address = os.environ.get("AWS_LAMBDA_RUNTIME_API")
    if not address:
        _die("AWS_LAMBDA_RUNTIME_API is not set")
    client = RuntimeClient(address)
    if os.environ.get("_NIMBUS_STEM") == "1":
        specialize(client)
    setup_io_and_logging()

    task_root = os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd()
    # sys.path[0] is this script's directory: replace it with the task root.
    if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(_THIS_FILE):
        sys.path[0] = task_root
    else:
        sys.path.insert(0, task_root)

    try:
        request_handler = get_handler(os.environ.get("_HANDLER", ""))
    except FaultException as e:
        error_result = make_error(e.msg, e.exception_type, e.trace)
        log_error(error_result)
        client.post_init_error(error_result)
        sys.exit(1)
    except Exception:
        error_result = build_fault_result(sys.exc_info())
        log_error(error_result)
        client.post_init_error(error_result)
        sys.exit(1)

    fork_workers(client)
    while True:
        headers, body = client.next()
        invoke_id = headers.get("Lambda-Runtime-Aws-Request-Id")
        if not invoke_id:
            _die("next response lacks Lambda-Runtime-Aws-Request-Id")
        _REQUEST_ID = invoke_id
        _set_invocation_var("_X_AMZN_TRACE_ID", headers.get("Lambda-Runtime-Trace-Id"))
        _set_invocation_var("TRACEPARENT", headers.get("Nimbus-Runtime-Traceparent"))
        _set_invocation_var("TRACESTATE", headers.get("Nimbus-Runtime-Tracestate"))
        handle_event(client, request_handler, headers, body)


if __name__ == "__main__":
    main()
