package com.amazonaws.services.lambda.runtime;

import com.amazonaws.services.lambda.runtime.logging.LogLevel;
import java.nio.charset.StandardCharsets;

/** The function-wide logger. Source-compatible with aws-lambda-java-core. */
public final class LambdaRuntime {
    private LambdaRuntime() {}

    private static final LambdaLogger LOGGER = new StdoutLogger();

    /** The logger every {@link Context#getLogger()} returns. */
    public static LambdaLogger getLogger() {
        return LOGGER;
    }

    /**
     * One log call is one log entry: the message goes to stdout on one line (inner newlines
     * become carriage returns, as Lambda's Node runtime does), with a newline added.
     */
    private static final class StdoutLogger implements LambdaLogger {
        private final LogLevel min = minLevel();

        @Override
        public void log(String message) {
            String m = String.valueOf(message);
            if (m.endsWith("\n")) {
                m = m.substring(0, m.length() - 1);
            }
            m = m.replace("\r\n", "\r").replace('\n', '\r');
            synchronized (System.out) {
                System.out.println(m);
            }
        }

        @Override
        public void log(byte[] message) {
            log(message == null ? "null" : new String(message, StandardCharsets.UTF_8));
        }

        @Override
        public void log(String message, LogLevel level) {
            if (level == null || level == LogLevel.UNDEFINED || level.ordinal() >= min.ordinal()) {
                log(message);
            }
        }

        @Override
        public void log(byte[] message, LogLevel level) {
            if (level == null || level == LogLevel.UNDEFINED || level.ordinal() >= min.ordinal()) {
                log(message);
            }
        }

        private static LogLevel minLevel() {
            String v = System.getenv("AWS_LAMBDA_LOG_LEVEL");
            if (v == null || v.isEmpty()) {
                return LogLevel.UNDEFINED;
            }
            try {
                return LogLevel.fromString(v);
            } catch (IllegalArgumentException e) {
                return LogLevel.UNDEFINED;
            }
        }
    }
}
