package com.amazonaws.services.lambda.runtime;

/**
 * What a handler knows about the invocation and the function it runs in. Source-compatible
 * with aws-lambda-java-core's {@code Context}; Nimbus's Java runtime provides the
 * implementation.
 */
public interface Context {

    /** The request id of this invocation (also returned to the caller). */
    String getAwsRequestId();

    /** {@code /aws/lambda/<function name>}. */
    String getLogGroupName();

    /** The log stream of this execution environment. */
    String getLogStreamName();

    String getFunctionName();

    /** {@code $LATEST} or a version number. */
    String getFunctionVersion();

    /** The ARN the caller used, including a qualifier when it gave one. */
    String getInvokedFunctionArn();

    /** The Amazon Cognito identity of the caller, or null. */
    CognitoIdentity getIdentity();

    /** The client context sent by the caller ({@code X-Amz-Client-Context}), or null. */
    ClientContext getClientContext();

    /** Milliseconds until the invocation times out. */
    int getRemainingTimeInMillis();

    /** The function's memory setting. */
    int getMemoryLimitInMB();

    /** A logger writing to the function's log. */
    LambdaLogger getLogger();

    /** The tenant id of the invocation, or null. */
    default String getTenantId() {
        return null;
    }

    /** The X-Ray trace header of the invocation, or null. */
    default String getXrayTraceId() {
        return null;
    }
}
