"""Conformance fixture `flaky`: fails with `TransientError` while
`event["attempt"] < event["failures"]`, then returns `{"attempt": …, "succeeded": true}`.

Definitions pass `"attempt.$": "$$.State.RetryCount"`, so the function needs no state of its own.
"""


class TransientError(Exception):
    pass


def handler(event, context):
    attempt = int(event.get("attempt", 0))
    failures = int(event.get("failures", 1))
    if attempt < failures:
        raise TransientError(f"attempt {attempt} of {failures} failing attempts")
    return {"attempt": attempt, "succeeded": True}
