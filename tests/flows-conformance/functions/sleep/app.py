"""Conformance fixture `sleep`: sleeps `event["seconds"]` seconds, then returns the event."""

import time


def handler(event, context):
    time.sleep(float(event.get("seconds", 0)))
    return event
