"""Conformance fixture `hello`: returns "Hello, <who>!" (the Lambda function of the AWS
Step Functions input/output processing examples)."""


def handler(event, context):
    return "Hello, " + str(event["who"]) + "!"
