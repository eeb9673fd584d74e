"""Conformance fixture `echo`: returns its event unchanged."""


def handler(event, context):
    return event
