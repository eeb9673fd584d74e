package dev.nimbus.runtime;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestHandler;
import com.amazonaws.services.lambda.runtime.RequestStreamHandler;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.InputStream;
import java.io.OutputStream;
import java.lang.reflect.Constructor;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.lang.reflect.ParameterizedType;
import java.lang.reflect.Type;
import java.lang.reflect.TypeVariable;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * Resolves {@code _HANDLER} ({@code package.Class::method} or {@code package.Class}) to an
 * {@link Invoker}, following the conventions of Lambda's Java runtime:
 *
 * <ul>
 *   <li>Without a method, the class implements {@link RequestStreamHandler} or
 *       {@link RequestHandler}; the event type is the handler's type argument.
 *   <li>With a method, the public methods of that name are ranked (non-bridge first, then
 *       longer signatures, a trailing {@link Context} counting one extra) and the first with a
 *       supported signature is used: {@code (InputStream, OutputStream, Context)},
 *       {@code (InputStream, OutputStream)}, {@code (InputStream, Context)},
 *       {@code (OutputStream, Context)}, {@code (InputStream)}, {@code (OutputStream)},
 *       {@code (Context)}, {@code (T, Context)}, {@code (T)} or {@code ()}, where T is any
 *       other type the event is deserialized to.
 *   <li>Instance methods run on one instance made at init with the public zero-argument
 *       constructor; static methods need none.
 * </ul>
 */
final class HandlerLoader {
    private HandlerLoader() {}

    /** Runs the handler on one event. */
    interface Invoker {
        byte[] invoke(byte[] event, Context context) throws Throwable;
    }

    /** A failure to load the handler, reported on {@code /init/error}. */
    static final class InitError extends Exception {
        private static final long serialVersionUID = 1L;

        /** {@code Lambda-Runtime-Function-Error-Type}: {@code Runtime.ClassNotFound}, … */
        final String runtimeType;
        /** The body's {@code errorType}: the Java exception class when there is one. */
        final String errorType;

        InitError(String runtimeType, String errorType, String message, Throwable cause) {
            super(message, cause);
            this.runtimeType = runtimeType;
            this.errorType = errorType;
        }

        InitError(String runtimeType, String message) {
            this(runtimeType, runtimeType, message, null);
        }
    }

    /** An event that does not fit the handler's input type. */
    static final class UnmarshalException extends RuntimeException {
        private static final long serialVersionUID = 1L;

        UnmarshalException(String message) {
            super(message);
        }
    }

    /** A result that cannot be serialized. */
    static final class MarshalException extends RuntimeException {
        private static final long serialVersionUID = 1L;

        MarshalException(String message) {
            super(message);
        }
    }

    static Invoker load(String handler, ClassLoader loader) throws InitError {
        String h = handler == null ? "" : handler.trim();
        String className = h;
        String methodName = null;
        int sep = h.indexOf("::");
        if (sep >= 0) {
            className = h.substring(0, sep);
            methodName = h.substring(sep + 2);
        }
        if (className.isEmpty() || (methodName != null && (methodName.isEmpty() || methodName.contains(":")))) {
            throw new InitError("Runtime.MalformedHandlerName", "Invalid handler: `" + h
                    + "': use package.Class::method or package.Class, for example example.Hello::handleRequest");
        }
        Class<?> clazz = loadClass(className, loader);
        return methodName == null ? loadInterface(clazz) : loadMethod(clazz, methodName);
    }

    private static Class<?> loadClass(String name, ClassLoader loader) throws InitError {
        String candidate = name;
        for (;;) {
            try {
                return Class.forName(candidate, true, loader);
            } catch (ClassNotFoundException e) {
                // `example.Outer.Inner` names the nested class `example.Outer$Inner`.
                int dot = candidate.lastIndexOf('.');
                if (dot <= 0) {
                    throw new InitError("Runtime.ClassNotFound", "java.lang.ClassNotFoundException",
                            "Class not found: " + name, null);
                }
                candidate = candidate.substring(0, dot) + "$" + candidate.substring(dot + 1);
            } catch (NoClassDefFoundError e) {
                throw new InitError("Runtime.ClassNotFound", e.getClass().getName(),
                        "Error loading class " + name + ": " + e.getMessage(), e);
            } catch (UnsupportedClassVersionError e) {
                throw new InitError("Runtime.BadFunctionCode", e.getClass().getName(), "Error loading class " + name
                        + ": " + e.getMessage() + " (this runtime runs Java " + Runtime.version().feature() + ")", e);
            } catch (ExceptionInInitializerError e) {
                Throwable cause = e.getCause() != null ? e.getCause() : e;
                throw new InitError("Runtime.BadFunctionCode", cause.getClass().getName(),
                        "Error loading class " + name + ": " + cause, cause);
            } catch (LinkageError e) {
                throw new InitError("Runtime.BadFunctionCode", e.getClass().getName(),
                        "Error loading class " + name + ": " + e, e);
            }
        }
    }

    private static Object newInstance(Class<?> clazz) throws InitError {
        Constructor<?> k;
        try {
            k = clazz.getConstructor();
        } catch (NoSuchMethodException e) {
            String why = clazz.getEnclosingClass() != null && !Modifier.isStatic(clazz.getModifiers())
                    ? " cannot be instantiated because it is a non-static inner class"
                    : " has no public zero-argument constructor";
            throw new InitError("Runtime.BadFunctionCode", "Class " + clazz.getName() + why);
        }
        try {
            k.setAccessible(true);
            return k.newInstance();
        } catch (InvocationTargetException e) {
            Throwable cause = e.getCause() != null ? e.getCause() : e;
            throw new InitError("Runtime.BadFunctionCode", cause.getClass().getName(),
                    String.valueOf(cause.getMessage() != null ? cause.getMessage() : cause), cause);
        } catch (ExceptionInInitializerError e) {
            Throwable cause = e.getCause() != null ? e.getCause() : e;
            throw new InitError("Runtime.BadFunctionCode", cause.getClass().getName(),
                    String.valueOf(cause.getMessage() != null ? cause.getMessage() : cause), cause);
        } catch (ReflectiveOperationException | RuntimeException e) {
            throw new InitError("Runtime.BadFunctionCode", e.getClass().getName(),
                    "Cannot create " + clazz.getName() + ": " + e, e);
        }
    }

    // ------------------------------------------------------ interface handlers --

    @SuppressWarnings({"unchecked", "rawtypes"})
    private static Invoker loadInterface(Class<?> clazz) throws InitError {
        if (RequestStreamHandler.class.isAssignableFrom(clazz)) {
            return new StreamInvoker((RequestStreamHandler) newInstance(clazz));
        }
        if (RequestHandler.class.isAssignableFrom(clazz)) {
            Type[] args = interfaceArguments(clazz, RequestHandler.class);
            Type in = args == null ? Object.class : args[0];
            Type outType = args == null ? Object.class : args[1];
            return new PojoInvoker((RequestHandler<Object, Object>) newInstance(clazz), in, outType == Void.class);
        }
        throw new InitError("Runtime.HandlerNotFound", "Class does not implement an appropriate handler interface: "
                + clazz.getName() + " (implement RequestHandler or RequestStreamHandler, or name a method: "
                + clazz.getName() + "::handleRequest)");
    }

    // Invokers are classes, not lambdas: the first lambda costs a JVM several milliseconds of
    // start-up (the bootstrap is also compiled with -XDstringConcat=inline for that reason).

    private static final class StreamInvoker implements Invoker {
        private final RequestStreamHandler handler;

        StreamInvoker(RequestStreamHandler handler) {
            this.handler = handler;
        }

        @Override
        public byte[] invoke(byte[] event, Context ctx) throws Throwable {
            ByteArrayOutputStream out = new ByteArrayOutputStream(1024);
            handler.handleRequest(new ByteArrayInputStream(event), out, ctx);
            return out.toByteArray();
        }
    }

    private static final class PojoInvoker implements Invoker {
        private final RequestHandler<Object, Object> handler;
        private final Type input;
        private final boolean isVoid;

        PojoInvoker(RequestHandler<Object, Object> handler, Type input, boolean isVoid) {
            this.handler = handler;
            this.input = input;
            this.isVoid = isVoid;
        }

        @Override
        public byte[] invoke(byte[] event, Context ctx) {
            Object result = handler.handleRequest(unmarshal(event, input), ctx);
            return isVoid ? NULL : marshal(result);
        }
    }

    /** The actual type arguments {@code clazz} gives the generic interface {@code iface}. */
    static Type[] interfaceArguments(Class<?> clazz, Class<?> iface) {
        return find(clazz, iface, new HashMap<>());
    }

    private static Type[] find(Type t, Class<?> iface, Map<TypeVariable<?>, Type> bindings) {
        Class<?> raw;
        if (t instanceof ParameterizedType) {
            ParameterizedType p = (ParameterizedType) t;
            raw = (Class<?>) p.getRawType();
            TypeVariable<?>[] vars = raw.getTypeParameters();
            Type[] actual = p.getActualTypeArguments();
            for (int i = 0; i < vars.length && i < actual.length; i++) {
                bindings.put(vars[i], resolve(actual[i], bindings));
            }
            if (raw == iface) {
                Type[] out = new Type[actual.length];
                for (int i = 0; i < actual.length; i++) {
                    out[i] = resolve(actual[i], bindings);
                }
                return out;
            }
        } else if (t instanceof Class) {
            raw = (Class<?>) t;
            if (raw == iface) {
                return null; // raw use of the interface: no type information
            }
        } else {
            return null;
        }
        for (Type i : raw.getGenericInterfaces()) {
            if (iface.isAssignableFrom(rawClass(i))) {
                Type[] r = find(i, iface, bindings);
                if (r != null) {
                    return r;
                }
            }
        }
        Type sup = raw.getGenericSuperclass();
        if (sup != null && iface.isAssignableFrom(rawClass(sup))) {
            return find(sup, iface, bindings);
        }
        return null;
    }

    private static Class<?> rawClass(Type t) {
        if (t instanceof Class) {
            return (Class<?>) t;
        }
        if (t instanceof ParameterizedType) {
            return (Class<?>) ((ParameterizedType) t).getRawType();
        }
        return Object.class;
    }

    private static Type resolve(Type t, Map<TypeVariable<?>, Type> bindings) {
        int guard = 0;
        while (t instanceof TypeVariable && bindings.containsKey(t) && guard++ < 32) {
            t = bindings.get(t);
        }
        return t;
    }

    // --------------------------------------------------------- method handlers --

    private static boolean isContext(Type t) {
        return t == Context.class;
    }

    /** Lambda's ranking: non-bridge first, then longer signatures; a trailing Context counts double. */
    private static int weight(Method m) {
        Class<?>[] p = m.getParameterTypes();
        return p.length + (p.length > 0 && isContext(p[p.length - 1]) ? 1 : 0);
    }

    private static Invoker loadMethod(Class<?> clazz, String name) throws InitError {
        List<Method> candidates = new ArrayList<>();
        for (Method m : clazz.getMethods()) {
            if (m.getName().equals(name)) {
                candidates.add(m);
            }
        }
        if (candidates.isEmpty()) {
            throw new InitError("Runtime.HandlerNotFound", "java.lang.NoSuchMethodException",
                    "Class " + clazz.getName() + " has no public method named " + name, null);
        }
        candidates.sort(new Comparator<Method>() {
            @Override
            public int compare(Method a, Method b) {
                if (a.isBridge() != b.isBridge()) {
                    return a.isBridge() ? 1 : -1;
                }
                return Integer.compare(weight(b), weight(a));
            }
        });
        for (Method m : candidates) {
            Invoker inv = forSignature(clazz, m);
            if (inv != null) {
                return inv;
            }
        }
        throw new InitError("Runtime.HandlerNotFound", "java.lang.NoSuchMethodException", "No public method named "
                + name + " with appropriate method signature found on class " + clazz.getName()
                + " (use (Input, Context), (Input), (InputStream, OutputStream, Context) or a shorter variant)", null);
    }

    private static final byte[] NULL = {'n', 'u', 'l', 'l'};

    /** The invoker for one overload, or null when its signature is not a handler's. */
    private static Invoker forSignature(Class<?> clazz, Method m) throws InitError {
        Type[] p = m.getGenericParameterTypes();
        Class<?>[] raw = m.getParameterTypes();
        // Map each parameter to a role: 'I' InputStream, 'O' OutputStream, 'C' Context, 'E' the event.
        String shape;
        switch (raw.length) {
            case 0:
                shape = "";
                break;
            case 1:
                shape = raw[0] == InputStream.class ? "I" : raw[0] == OutputStream.class ? "O" : isContext(raw[0]) ? "C" : "E";
                break;
            case 2:
                if (raw[0] == InputStream.class && raw[1] == OutputStream.class) {
                    shape = "IO";
                } else if (raw[0] == InputStream.class && isContext(raw[1])) {
                    shape = "IC";
                } else if (raw[0] == OutputStream.class && isContext(raw[1])) {
                    shape = "OC";
                } else if (raw[0] != OutputStream.class && !isContext(raw[0]) && isContext(raw[1])) {
                    shape = "EC";
                } else {
                    return null;
                }
                break;
            case 3:
                if (raw[0] == InputStream.class && raw[1] == OutputStream.class && isContext(raw[2])) {
                    shape = "IOC";
                } else {
                    return null;
                }
                break;
            default:
                return null;
        }
        Object instance = Modifier.isStatic(m.getModifiers()) ? null : newInstance(clazz);
        try {
            m.setAccessible(true);
        } catch (RuntimeException e) {
            throw new InitError("Runtime.HandlerNotFound", e.getClass().getName(),
                    "Cannot call " + clazz.getName() + "::" + m.getName() + ": " + e.getMessage(), e);
        }
        boolean streams = shape.indexOf('I') >= 0 || shape.indexOf('O') >= 0;
        Type eventType = shape.startsWith("E") ? resolveIn(clazz, p[0]) : null;
        boolean isVoid = m.getReturnType() == void.class || m.getReturnType() == Void.class;
        return new MethodInvoker(m, instance, shape, eventType, streams, isVoid);
    }

    /** Calls a handler method, its arguments laid out by {@code roles}. */
    private static final class MethodInvoker implements Invoker {
        private final Method m;
        private final Object instance;
        private final String roles;
        private final Type eventType;
        private final boolean streams;
        private final boolean isVoid;

        MethodInvoker(Method m, Object instance, String roles, Type eventType, boolean streams, boolean isVoid) {
            this.m = m;
            this.instance = instance;
            this.roles = roles;
            this.eventType = eventType;
            this.streams = streams;
            this.isVoid = isVoid;
        }

        @Override
        public byte[] invoke(byte[] event, Context ctx) throws Throwable {
            Object[] args = new Object[roles.length()];
            ByteArrayOutputStream out = null;
            for (int i = 0; i < roles.length(); i++) {
                switch (roles.charAt(i)) {
                    case 'I':
                        args[i] = new ByteArrayInputStream(event);
                        break;
                    case 'O':
                        out = new ByteArrayOutputStream(1024);
                        args[i] = out;
                        break;
                    case 'C':
                        args[i] = ctx;
                        break;
                    default:
                        args[i] = unmarshal(event, eventType);
                }
            }
            Object result;
            try {
                result = m.invoke(instance, args);
            } catch (InvocationTargetException e) {
                throw e.getCause() != null ? e.getCause() : e;
            }
            if (streams && out != null) {
                return out.toByteArray();
            }
            return isVoid ? NULL : marshal(result);
        }
    }

    /** A method parameter typed with a class type variable (inherited generic handler). */
    private static Type resolveIn(Class<?> clazz, Type t) {
        if (!(t instanceof TypeVariable)) {
            return t;
        }
        Map<TypeVariable<?>, Type> bindings = new HashMap<>();
        for (Type k = clazz.getGenericSuperclass(); k != null; ) {
            if (k instanceof ParameterizedType) {
                ParameterizedType pt = (ParameterizedType) k;
                Class<?> r = (Class<?>) pt.getRawType();
                TypeVariable<?>[] vars = r.getTypeParameters();
                Type[] actual = pt.getActualTypeArguments();
                for (int i = 0; i < vars.length && i < actual.length; i++) {
                    bindings.put(vars[i], resolve(actual[i], bindings));
                }
                k = r.getGenericSuperclass();
            } else if (k instanceof Class) {
                k = ((Class<?>) k).getGenericSuperclass();
            } else {
                break;
            }
        }
        return resolve(t, bindings);
    }

    // ------------------------------------------------------------------- JSON --

    static Object unmarshal(byte[] event, Type type) {
        if (type == InputStream.class) {
            return new ByteArrayInputStream(event);
        }
        if (type == byte[].class) {
            return event;
        }
        Object natural;
        try {
            natural = isBlank(event) ? null : Json.parse(event);
        } catch (Json.JsonException e) {
            if (type == String.class) {
                // Lenient: a String parameter also takes a payload that is not JSON.
                return new String(event, java.nio.charset.StandardCharsets.UTF_8);
            }
            throw new UnmarshalException("Unable to parse the event as JSON: " + e.getMessage());
        }
        try {
            return Json.convert(natural, type);
        } catch (Json.JsonException e) {
            throw new UnmarshalException("Unable to unmarshal the event into " + type.getTypeName() + ": "
                    + e.getMessage());
        }
    }

    private static boolean isBlank(byte[] b) {
        for (byte x : b) {
            if (x != ' ' && x != '\n' && x != '\r' && x != '\t') {
                return false;
            }
        }
        return true;
    }

    static byte[] marshal(Object result) {
        try {
            return Json.writeBytes(result);
        } catch (Json.JsonException | StackOverflowError e) {
            throw new MarshalException("Unable to marshal the response: " + e.getMessage());
        }
    }
}
