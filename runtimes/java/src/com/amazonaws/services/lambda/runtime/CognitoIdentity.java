package com.amazonaws.services.lambda.runtime;

/** The Amazon Cognito identity of a caller. Source-compatible with aws-lambda-java-core. */
public interface CognitoIdentity {
    String getIdentityId();

    String getIdentityPoolId();
}
