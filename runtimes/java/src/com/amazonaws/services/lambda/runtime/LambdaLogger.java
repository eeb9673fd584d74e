package com.amazonaws.services.lambda.runtime;

import com.amazonaws.services.lambda.runtime.logging.LogLevel;

/** Writes to the function's log. Source-compatible with aws-lambda-java-core. */
public interface LambdaLogger {

    /** Logs a message as one log entry. */
    void log(String message);

    /** Logs bytes (UTF-8 text) as one log entry. */
    void log(byte[] message);

    /** Logs a message at a level (filtered by {@code AWS_LAMBDA_LOG_LEVEL}). */
    default void log(String message, LogLevel logLevel) {
        log(message);
    }

    default void log(byte[] message, LogLevel logLevel) {
        log(message);
    }
}
