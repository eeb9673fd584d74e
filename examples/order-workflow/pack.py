"""Packs one line item (the Map state runs this once per item, a few at a time)."""


def handler(event, context):
    return {"sku": event["sku"], "packed": int(event["qty"]), "box": f"box-{event['index']}"}
