package dev.nimbus.runtime;

import com.amazonaws.services.lambda.runtime.Client;
import com.amazonaws.services.lambda.runtime.ClientContext;
import com.amazonaws.services.lambda.runtime.CognitoIdentity;
import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.LambdaLogger;
import com.amazonaws.services.lambda.runtime.LambdaRuntime;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;

/** The {@link Context} of one invocation. */
final class InvocationContext implements Context {
    private static final String FUNCTION_NAME = env("AWS_LAMBDA_FUNCTION_NAME");
    private static final String FUNCTION_VERSION = env("AWS_LAMBDA_FUNCTION_VERSION");
    private static final String LOG_GROUP = env("AWS_LAMBDA_LOG_GROUP_NAME");
    private static final String LOG_STREAM = env("AWS_LAMBDA_LOG_STREAM_NAME");
    private static final int MEMORY_MB = memory();

    private final RuntimeApi.Invocation inv;
    private final CognitoIdentity identity;
    private final ClientContext clientContext;

    InvocationContext(RuntimeApi.Invocation inv) {
        this.inv = inv;
        this.identity = identity(inv.cognitoIdentity);
        this.clientContext = clientContext(inv.clientContext);
    }

    private static String env(String name) {
        return System.getenv(name);
    }

    private static int memory() {
        try {
            return Integer.parseInt(System.getenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"));
        } catch (RuntimeException e) {
            return 128;
        }
    }

    @Override
    public String getAwsRequestId() {
        return inv.requestId;
    }

    @Override
    public String getLogGroupName() {
        return LOG_GROUP;
    }

    @Override
    public String getLogStreamName() {
        return LOG_STREAM;
    }

    @Override
    public String getFunctionName() {
        return FUNCTION_NAME;
    }

    @Override
    public String getFunctionVersion() {
        return FUNCTION_VERSION;
    }

    @Override
    public String getInvokedFunctionArn() {
        return inv.invokedFunctionArn;
    }

    @Override
    public CognitoIdentity getIdentity() {
        return identity;
    }

    @Override
    public ClientContext getClientContext() {
        return clientContext;
    }

    @Override
    public int getRemainingTimeInMillis() {
        long left = inv.deadlineMs - System.currentTimeMillis();
        return (int) Math.max(0, Math.min(Integer.MAX_VALUE, left));
    }

    @Override
    public int getMemoryLimitInMB() {
        return MEMORY_MB;
    }

    @Override
    public LambdaLogger getLogger() {
        return LambdaRuntime.getLogger();
    }

    @Override
    public String getTenantId() {
        return inv.tenantId;
    }

    @Override
    public String getXrayTraceId() {
        return inv.traceId;
    }

    @Override
    public String toString() {
        return "Context{requestId=" + inv.requestId + ", function=" + FUNCTION_NAME + ":" + FUNCTION_VERSION + "}";
    }

    // ----------------------------------------------------------------- headers --

    private static Map<?, ?> objectOrNull(String json) {
        if (json == null || json.isEmpty()) {
            return null;
        }
        try {
            Object v = Json.parse(json);
            return v instanceof Map ? (Map<?, ?>) v : null;
        } catch (Json.JsonException e) {
            System.err.println("nimbus java runtime: ignoring a malformed context header: " + e.getMessage());
            return null;
        }
    }

    private static String str(Map<?, ?> m, String key) {
        Object v = m == null ? null : m.get(key);
        return v == null ? null : v instanceof String ? (String) v : Json.write(v);
    }

    private static Map<String, String> strings(Object v) {
        Map<String, String> out = new LinkedHashMap<>();
        if (v instanceof Map) {
            for (Map.Entry<?, ?> e : ((Map<?, ?>) v).entrySet()) {
                out.put(String.valueOf(e.getKey()), str((Map<?, ?>) v, (String) e.getKey()));
            }
        }
        return out;
    }

    private static CognitoIdentity identity(String json) {
        Map<?, ?> m = objectOrNull(json);
        if (m == null) {
            return null;
        }
        String id = str(m, "cognitoIdentityId");
        String pool = str(m, "cognitoIdentityPoolId");
        return new CognitoIdentity() {
            @Override
            public String getIdentityId() {
                return id;
            }

            @Override
            public String getIdentityPoolId() {
                return pool;
            }
        };
    }

    private static ClientContext clientContext(String json) {
        Map<?, ?> m = objectOrNull(json);
        if (m == null) {
            return null;
        }
        Map<?, ?> c = m.get("client") instanceof Map ? (Map<?, ?>) m.get("client") : null;
        Client client = c == null ? null : new Client() {
            @Override
            public String getInstallationId() {
                return str(c, "installation_id");
            }

            @Override
            public String getAppTitle() {
                return str(c, "app_title");
            }

            @Override
            public String getAppVersionName() {
                return str(c, "app_version_name");
            }

            @Override
            public String getAppVersionCode() {
                return str(c, "app_version_code");
            }

            @Override
            public String getAppPackageName() {
                return str(c, "app_package_name");
            }
        };
        Map<String, String> custom = strings(m.get("custom"));
        Map<String, String> env = Collections.unmodifiableMap(strings(m.get("env")));
        return new ClientContext() {
            @Override
            public Client getClient() {
                return client;
            }

            @Override
            public Map<String, String> getCustom() {
                return custom;
            }

            @Override
            public Map<String, String> getEnvironment() {
                return env;
            }
        };
    }
}
