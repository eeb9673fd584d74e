package example;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestHandler;
import java.util.LinkedHashMap;
import java.util.Map;

/** A Lambda-style Java handler: answers API Gateway HTTP API v2 / function URL events. */
public class Hello implements RequestHandler<Map<String, Object>, Map<String, Object>> {

    @Override
    public Map<String, Object> handleRequest(Map<String, Object> event, Context context) {
        String name = param(event, "pathParameters");
        if (name == null) {
            name = param(event, "queryStringParameters");
        }
        if (name == null) {
            name = "world";
        }
        String greeting = System.getenv().getOrDefault("GREETING", "Hello");
        context.getLogger().log("greeting " + name);

        Map<?, ?> http = child(child(event, "requestContext"), "http");
        String body = "{"
                + "\"message\":" + quote(greeting + ", " + name + " from Java!") + ","
                + "\"path\":" + quote(event.get("rawPath")) + ","
                + "\"method\":" + quote(http == null ? null : http.get("method")) + ","
                + "\"requestId\":" + quote(context.getAwsRequestId()) + ","
                + "\"function\":" + quote(context.getFunctionName() + ":" + context.getFunctionVersion()) + ","
                + "\"remainingMs\":" + context.getRemainingTimeInMillis()
                + "}";

        Map<String, Object> response = new LinkedHashMap<>();
        response.put("statusCode", 200);
        response.put("headers", Map.of("content-type", "application/json"));
        response.put("body", body);
        return response;
    }

    private static Map<?, ?> child(Object parent, String key) {
        Object v = parent instanceof Map ? ((Map<?, ?>) parent).get(key) : null;
        return v instanceof Map ? (Map<?, ?>) v : null;
    }

    private static String param(Map<String, Object> event, String key) {
        Map<?, ?> params = child(event, key);
        Object v = params == null ? null : params.get("name");
        return v == null ? null : v.toString();
    }

    /** A JSON string literal (or null). */
    private static String quote(Object value) {
        if (value == null) {
            return "null";
        }
        StringBuilder b = new StringBuilder("\"");
        for (char c : value.toString().toCharArray()) {
            if (c == '"' || c == '\\') {
                b.append('\\').append(c);
            } else if (c < 0x20) {
                b.append(String.format("\\u%04x", (int) c));
            } else {
                b.append(c);
            }
        }
        return b.append('"').toString();
    }
}
