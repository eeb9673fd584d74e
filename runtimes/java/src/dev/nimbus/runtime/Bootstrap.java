package dev.nimbus.runtime;

import java.io.IOError;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

/**
 * Nimbus's Java runtime: loads the handler named by {@code _HANDLER} (or the first argument)
 * from the class path, then runs the Runtime API loop at {@code AWS_LAMBDA_RUNTIME_API}.
 *
 * <p>Started by Nimbus as {@code java <flags> -cp <runtime>:<function class path>
 * dev.nimbus.runtime.Bootstrap} with the function's code directory as working directory.
 *
 * <p>Exit status 1 after an init error (reported on {@code /init/error} first), after a fatal
 * error in the handler (reported first: {@link OutOfMemoryError} and the other
 * {@link VirtualMachineError}s, {@link IOError}; unlike Lambda, a {@link StackOverflowError}
 * is not fatal: the stack is unwound and the JVM is sound), and when the Runtime API is
 * unusable.
 */
public final class Bootstrap {
    private Bootstrap() {}

    /** Where the AWS X-Ray SDK for Java looks for the trace header. */
    private static final String TRACE_PROPERTY = "com.amazonaws.xray.traceHeader";

    public static void main(String[] args) {
        Output.install();
        String api = System.getenv("AWS_LAMBDA_RUNTIME_API");
        if (api == null || api.isEmpty()) {
            System.err.println("nimbus java runtime: AWS_LAMBDA_RUNTIME_API is not set");
            System.exit(1);
        }
        RuntimeApi rapi = new RuntimeApi(api);
        String handler = args.length > 0 ? args[0] : System.getenv("_HANDLER");
        HandlerLoader.Invoker invoker = null;
        try {
            invoker = HandlerLoader.load(handler, ClassLoader.getSystemClassLoader());
        } catch (HandlerLoader.InitError e) {
            initFailed(rapi, e.runtimeType, e.errorType, e.getMessage(), e.getCause());
        } catch (Throwable t) {
            initFailed(rapi, "Runtime.Unknown", t.getClass().getName(), message(t), t);
        }
        loop(rapi, invoker);
    }

    private static void initFailed(RuntimeApi rapi, String runtimeType, String errorType, String message,
            Throwable cause) {
        if (cause != null) {
            filter(cause);
        }
        System.err.println("Init error: " + errorType + ": " + message);
        if (cause != null) {
            cause.printStackTrace();
        }
        Map<String, Object> body = Json.object("errorMessage", message, "errorType", errorType, "stackTrace",
                cause == null ? List.of() : frames(cause));
        try {
            rapi.postInitError(Json.writeBytes(body), runtimeType);
        } catch (IOException e) {
            System.err.println("nimbus java runtime: posting the init error failed: " + e);
        }
        Output.endLines();
        System.exit(1);
    }

    private static void loop(RuntimeApi rapi, HandlerLoader.Invoker invoker) {
        for (;;) {
            RuntimeApi.Invocation inv;
            try {
                inv = rapi.next();
            } catch (IOException e) {
                System.err.println("nimbus java runtime: " + e.getMessage());
                System.exit(1);
                return;
            }
            if (inv.traceId != null) {
                System.setProperty(TRACE_PROPERTY, inv.traceId);
            } else {
                System.clearProperty(TRACE_PROPERTY);
            }
            byte[] result = null;
            Throwable failure = null;
            try {
                result = invoker.invoke(inv.payload, new InvocationContext(inv));
            } catch (Throwable t) {
                failure = t;
            }
            // Log lines end with the invocation that wrote them.
            Output.endLines();
            boolean fatal = (failure instanceof VirtualMachineError && !(failure instanceof StackOverflowError))
                    || failure instanceof IOError;
            try {
                if (failure == null) {
                    rapi.postResponse(inv.requestId, result);
                } else {
                    rapi.postError(inv.requestId, invocationError(failure), !fatal);
                }
            } catch (IOException e) {
                System.err.println("nimbus java runtime: posting the result failed: " + e.getMessage());
                System.exit(1);
            }
            if (fatal) {
                System.err.println("nimbus java runtime: exiting after " + failure.getClass().getName());
                Output.endLines();
                Runtime.getRuntime().halt(1);
            }
            Thread.interrupted(); // a handler may leave the flag set
        }
    }

    /** The error body of a failed invocation, also written to the log. */
    private static byte[] invocationError(Throwable t) {
        try {
            filter(t);
            String type = t instanceof HandlerLoader.UnmarshalException ? "Runtime.UnmarshalError"
                    : t instanceof HandlerLoader.MarshalException ? "Runtime.MarshalError"
                    : t.getClass().getName();
            if (type.startsWith("Runtime.")) {
                System.err.println(type + ": " + message(t));
            } else {
                t.printStackTrace();
            }
            Map<String, Object> body = errorObject(t, type, 0);
            return Json.writeBytes(body);
        } catch (Throwable again) {
            // Out of memory while describing the error: send what we can.
            return ("{\"errorMessage\":\"" + t.getClass().getName() + "\",\"errorType\":\"" + t.getClass().getName()
                    + "\"}").getBytes(StandardCharsets.UTF_8);
        }
    }

    private static Map<String, Object> errorObject(Throwable t, String type, int depth) {
        // The runtime's own errors (Runtime.UnmarshalError, …) carry no trace of its internals.
        Map<String, Object> m = Json.object("errorMessage", message(t), "errorType", type, "stackTrace",
                type.startsWith("Runtime.") ? List.of() : frames(t));
        Throwable cause = t.getCause();
        if (cause != null && cause != t && depth < 8) {
            m.put("cause", errorObject(cause, cause.getClass().getName(), depth + 1));
        }
        return m;
    }

    private static String message(Throwable t) {
        String m = t.getMessage();
        return m != null ? m : t.getClass().getName();
    }

    /** Frames kept per throwable in an error body (a stack overflow has a thousand). */
    private static final int MAX_FRAMES = 200;

    private static List<String> frames(Throwable t) {
        StackTraceElement[] st = t.getStackTrace();
        int n = Math.min(st.length, MAX_FRAMES);
        List<String> out = new ArrayList<>(n + 1);
        for (int i = 0; i < n; i++) {
            out.add(st[i].toString());
        }
        if (st.length > n) {
            out.add("... " + (st.length - n) + " more");
        }
        return out;
    }

    /**
     * Cuts the runtime's own frames (and the reflection that called the handler) off the
     * stack traces of {@code t} and its causes, so traces end at the handler.
     */
    private static void filter(Throwable t) {
        for (int depth = 0; t != null && depth < 8; depth++, t = t.getCause()) {
            StackTraceElement[] st = t.getStackTrace();
            int end = st.length;
            for (int i = 0; i < st.length; i++) {
                if (st[i].getClassName().startsWith("dev.nimbus.runtime.")) {
                    end = i;
                    break;
                }
            }
            while (end > 0 && reflective(st[end - 1])) {
                end--;
            }
            if (end > 0 && end < st.length) {
                t.setStackTrace(Arrays.copyOf(st, end));
            }
        }
    }

    private static boolean reflective(StackTraceElement e) {
        String c = e.getClassName();
        return c.startsWith("jdk.internal.reflect.") || c.equals("java.lang.reflect.Method");
    }
}
