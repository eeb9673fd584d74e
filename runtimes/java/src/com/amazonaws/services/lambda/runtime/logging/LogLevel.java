package com.amazonaws.services.lambda.runtime.logging;

import java.util.Locale;

/** Log levels of {@code LambdaLogger.log(String, LogLevel)}. Source-compatible with aws-lambda-java-core. */
public enum LogLevel {
    /** The level of {@code log(String)}: never filtered. */
    UNDEFINED,
    TRACE,
    DEBUG,
    INFO,
    WARN,
    ERROR,
    FATAL;

    public static LogLevel fromString(String logLevel) {
        try {
            return LogLevel.valueOf(logLevel.toUpperCase(Locale.ROOT));
        } catch (RuntimeException e) {
            throw new IllegalArgumentException("Invalid log level: '" + logLevel
                    + "' expected one of [TRACE, DEBUG, INFO, WARN, ERROR, FATAL]");
        }
    }
}
