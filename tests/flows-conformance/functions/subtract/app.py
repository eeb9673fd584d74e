"""Conformance fixture `subtract`: `event[0] - event[1]` for a two-number array (the
`Subtract` task of the Parallel-state example in the States Language specification)."""


def handler(event, context):
    return event[0] - event[1]
