package dev.nimbus.runtime;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.HttpURLConnection;
import java.net.Proxy;
import java.net.URI;
import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;

/**
 * A client of the Lambda Runtime API (2018-06-01) at {@code host:port}.
 *
 * <p>HttpURLConnection keeps one connection alive between calls (its keep-alive cache), starts
 * in a few milliseconds (java.net.http.HttpClient costs about half a second of JVM start-up),
 * and never goes through a proxy a function may configure for its own traffic.
 */
final class RuntimeApi {
    private static final String USER_AGENT = "nimbus-java/1 (" + System.getProperty("java.version") + ")";

    /**
     * Nimbus's extension: an accepted result or error posted with this header is answered with
     * the next invocation instead of 202 (another Runtime API ignores it).
     */
    private static final String ASK_NEXT = "Nimbus-Runtime-Next";

    private final String base;
    /** The next invocation, when a post's answer carried it. */
    private Invocation pending;

    RuntimeApi(String hostPort) {
        this.base = "http://" + hostPort + "/2018-06-01/runtime";
    }

    /** One event from {@code next}. */
    static final class Invocation {
        String requestId;
        long deadlineMs;
        String invokedFunctionArn;
        String traceId;
        String clientContext;
        String cognitoIdentity;
        String tenantId;
        byte[] payload;
    }

    /** A reply that is not what the Runtime API contract promises. */
    static final class ApiException extends IOException {
        private static final long serialVersionUID = 1L;

        ApiException(String message) {
            super(message);
        }
    }

    private static final class Reply {
        int status;
        byte[] body;
        HttpURLConnection conn;
    }

    private Reply call(String method, String path, byte[] body, String errorType, boolean askNext)
            throws IOException {
        HttpURLConnection c = (HttpURLConnection) URI.create(base + path).toURL().openConnection(Proxy.NO_PROXY);
        c.setRequestMethod(method);
        c.setUseCaches(false);
        c.setRequestProperty("User-Agent", USER_AGENT);
        c.setRequestProperty("Accept", "*/*");
        // `next` is a long poll: no read timeout (Lambda's clients set none either).
        c.setConnectTimeout(5000);
        c.setReadTimeout(0);
        if (body != null) {
            c.setDoOutput(true);
            c.setFixedLengthStreamingMode(body.length);
            c.setRequestProperty("Content-Type", "application/json");
            if (errorType != null) {
                c.setRequestProperty("Lambda-Runtime-Function-Error-Type", errorType);
            }
            if (askNext) {
                c.setRequestProperty(ASK_NEXT, "1");
            }
            try (OutputStream out = c.getOutputStream()) {
                out.write(body);
            }
        }
        Reply r = new Reply();
        r.conn = c;
        r.status = c.getResponseCode();
        // Reading the body to its end returns the connection to the keep-alive cache.
        InputStream in = r.status >= 400 ? c.getErrorStream() : c.getInputStream();
        if (in == null) {
            r.body = new byte[0];
        } else {
            try (InputStream i = in) {
                r.body = i.readAllBytes();
            }
        }
        return r;
    }

    /** The next invocation: the one the last post's answer carried, else a {@code GET next}. */
    Invocation next() throws IOException {
        Invocation inv = pending;
        if (inv != null) {
            pending = null;
            return inv;
        }
        Reply r = call("GET", "/invocation/next", null, null, false);
        if (r.status != 200) {
            throw new ApiException("GET next returned " + r.status + ": " + snippet(r.body));
        }
        return invocationOf(r);
    }

    private static Invocation invocationOf(Reply r) throws ApiException {
        Invocation inv = new Invocation();
        inv.requestId = r.conn.getHeaderField("Lambda-Runtime-Aws-Request-Id");
        if (inv.requestId == null || inv.requestId.isEmpty()) {
            throw new ApiException("GET next: the reply lacks Lambda-Runtime-Aws-Request-Id");
        }
        String deadline = r.conn.getHeaderField("Lambda-Runtime-Deadline-Ms");
        try {
            inv.deadlineMs = deadline == null ? Long.MAX_VALUE : Long.parseLong(deadline.trim());
        } catch (NumberFormatException e) {
            inv.deadlineMs = Long.MAX_VALUE;
        }
        inv.invokedFunctionArn = r.conn.getHeaderField("Lambda-Runtime-Invoked-Function-Arn");
        inv.traceId = r.conn.getHeaderField("Lambda-Runtime-Trace-Id");
        inv.clientContext = r.conn.getHeaderField("Lambda-Runtime-Client-Context");
        inv.cognitoIdentity = r.conn.getHeaderField("Lambda-Runtime-Cognito-Identity");
        inv.tenantId = r.conn.getHeaderField("Lambda-Runtime-Aws-Tenant-Id");
        inv.payload = r.body;
        return inv;
    }

    /** Posts a result; its answer is the next invocation, kept for {@link #next}. */
    void postResponse(String requestId, byte[] body) throws IOException {
        keepNext(call("POST", "/invocation/" + enc(requestId) + "/response", body, null, true), "response");
    }

    /** Posts an error; with {@code askNext} (not when the process exits after it) as above. */
    void postError(String requestId, byte[] errorJson, boolean askNext) throws IOException {
        keepNext(call("POST", "/invocation/" + enc(requestId) + "/error", errorJson, null, askNext), "error");
    }

    void postInitError(byte[] errorJson, String errorType) throws IOException {
        expect202(call("POST", "/init/error", errorJson, errorType, false), "init error");
    }

    private void keepNext(Reply r, String what) throws IOException {
        if (r.status == 200 && r.conn.getHeaderField("Lambda-Runtime-Aws-Request-Id") != null) {
            pending = invocationOf(r);
        } else {
            expect202(r, what);
        }
    }

    private static void expect202(Reply r, String what) throws IOException {
        if (r.status != 202) {
            // The platform has already settled the invocation (e.g. a response over the size
            // limit); say so in the log and carry on with the next event.
            System.err.println("nimbus java runtime: posting the " + what + " returned " + r.status + ": "
                    + snippet(r.body));
        }
    }

    private static String enc(String s) {
        return URLEncoder.encode(s, StandardCharsets.UTF_8);
    }

    private static String snippet(byte[] b) {
        String s = new String(b, StandardCharsets.UTF_8);
        return s.length() > 500 ? s.substring(0, 500) + "…" : s;
    }
}
