"""Conformance fixture `fail`: raises an exception whose class name is `event["errorType"]`
(default `CustomError`) with message `event["message"]` (default `failed`).

On Lambda the error type is the exception's class name; Step Functions makes it the state's
error name and the JSON error object (`errorMessage`, `errorType`, …) its cause.
"""


def handler(event, context):
    event = event if isinstance(event, dict) else {}
    name = str(event.get("errorType", "CustomError"))
    error_class = type(name, (Exception,), {})
    raise error_class(str(event.get("message", "failed")))
