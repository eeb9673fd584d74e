"""Charges the customer's card. The "bank" declines now and then: a declined attempt raises
PaymentTemporarilyDeclined, which the workflow retries with exponential backoff.

Whether an attempt is declined is a pseudo-random function of the order and the attempt
(`$$.State.RetryCount`), so a given order behaves the same on every run: orders whose id
ends in an even digit are declined on their first two attempts."""

import hashlib
import os


class PaymentTemporarilyDeclined(Exception):
    pass


class PaymentRefused(Exception):
    pass


def handler(event, context):
    order_id = event["orderId"]
    attempt = int(event.get("attempt", 0))
    if event.get("customer") == "mallory":
        raise PaymentRefused(f"card of {event['customer']} refused")
    flaky = os.environ.get("DECLINE_FIRST_ATTEMPTS", "2")
    declines = int(flaky) if order_id[-1:].isdigit() and int(order_id[-1]) % 2 == 0 else 0
    if attempt < declines:
        raise PaymentTemporarilyDeclined(f"attempt {attempt} for {order_id} declined, try again")
    digest = hashlib.sha256(f"{order_id}:{event['amount']}".encode()).hexdigest()[:16]
    return {"charge": f"ch-{digest}", "amount": event["amount"], "attempts": attempt + 1}
