package com.amazonaws.services.lambda.runtime;

/**
 * A handler taking the event as a value of type {@code I} (deserialized from JSON) and
 * returning a value serialized to JSON. Source-compatible with aws-lambda-java-core.
 *
 * @param <I> the event type: {@code Map<String, Object>}, {@code String}, a POJO, …
 * @param <O> the result type
 */
public interface RequestHandler<I, O> {
    O handleRequest(I input, Context context);
}
