"""Undoes what succeeded before a failure: releases the reservation, refunds the charge."""


def handler(event, context):
    undone = []
    work = event.get("work") or []
    if isinstance(work, list):
        for part in work:
            if isinstance(part, dict) and "reservation" in part:
                undone.append(f"released {part['reservation']}")
            if isinstance(part, dict) and "charge" in part:
                undone.append(f"refunded {part['charge']}")
    error = event.get("error") or {}
    return {"orderId": event.get("orderId"), "compensated": undone, "reason": error.get("Error")}
