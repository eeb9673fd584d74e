"""A Lambda-style Python handler: answers API Gateway HTTP API v2 / function URL events."""
import json
import logging

logger = logging.getLogger()
logger.setLevel(logging.INFO)


def handler(event, context):
    name = (event.get("pathParameters") or {}).get("name") or (event.get("queryStringParameters") or {}).get("name") or "world"
    logger.info("greeting %s", name)
    http = (event.get("requestContext") or {}).get("http") or {}
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({
            "message": "Hello, %s from Python!" % name,
            "path": event.get("rawPath"),
            "method": http.get("method"),
            "requestId": context.aws_request_id,
            "function": "%s:%s" % (context.function_name, context.function_version),
            "remainingMs": context.get_remaining_time_in_millis(),
        }),
    }
