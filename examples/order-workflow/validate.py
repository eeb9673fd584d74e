"""Checks an order: {"orderId", "customer", "amount", "items": [{"sku", "qty", "price"}]}."""


class InvalidOrder(Exception):
    pass


def handler(event, context):
    order_id = event.get("orderId")
    items = event.get("items") or []
    if not order_id or not isinstance(items, list) or not items:
        raise InvalidOrder(f"order {order_id!r} has no items")
    for item in items:
        if not item.get("sku") or int(item.get("qty", 0)) < 1:
            raise InvalidOrder(f"order {order_id}: bad line item {item}")
    amount = round(sum(float(i["price"]) * int(i["qty"]) for i in items), 2)
    return {**event, "amount": amount, "validated": True}
