"""Conformance fixture `add`: the sum of a JSON array of numbers (the `Add` task of the
Parallel-state example in the States Language specification), or of `event["a"] + event["b"]`."""


def handler(event, context):
    if isinstance(event, list):
        return sum(event)
    return event["a"] + event["b"]
