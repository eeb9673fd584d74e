package dev.nimbus.runtime;

import java.lang.reflect.Array;
import java.lang.reflect.Constructor;
import java.lang.reflect.Field;
import java.lang.reflect.GenericArrayType;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.lang.reflect.ParameterizedType;
import java.lang.reflect.RecordComponent;
import java.lang.reflect.Type;
import java.lang.reflect.TypeVariable;
import java.lang.reflect.WildcardType;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Collection;
import java.util.Date;
import java.util.EnumSet;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.TreeMap;
import java.util.TreeSet;

/**
 * A small JSON codec with no dependencies, covering what Lambda's Java serializer does for
 * handler events and results.
 *
 * <p>Parsing gives natural values: {@code LinkedHashMap<String,Object>}, {@code ArrayList},
 * {@code String}, {@code Integer}/{@code Long}/{@code BigInteger}, {@code Double},
 * {@code Boolean}, {@code null}. {@link #convert} binds a natural value to a declared type:
 * boxed and primitive numbers, {@code String}, enums, arrays, collections, maps, records and
 * POJOs (setters or fields, property names matched case-insensitively, unknown properties
 * ignored). {@link #write} serializes maps, collections, arrays, records and POJOs (getters
 * and public fields, Jackson-style property names).
 */
final class Json {
    private Json() {}

    /** A malformed document or a value that does not fit the declared type. */
    static final class JsonException extends RuntimeException {
        private static final long serialVersionUID = 1L;

        JsonException(String message) {
            super(message);
        }
    }

    private static final int MAX_DEPTH = 512;

    // ------------------------------------------------------------------ parsing --

    static Object parse(byte[] utf8) {
        return parse(new String(utf8, StandardCharsets.UTF_8));
    }

    static Object parse(String text) {
        Parser p = new Parser(text);
        p.ws();
        Object v = p.value(0);
        p.ws();
        if (p.i != text.length()) {
            throw p.error("unexpected data after the JSON value");
        }
        return v;
    }

    private static final class Parser {
        final String s;
        int i;

        Parser(String s) {
            this.s = s;
        }

        JsonException error(String what) {
            return new JsonException(what + " at offset " + i);
        }

        void ws() {
            while (i < s.length()) {
                char c = s.charAt(i);
                if (c == ' ' || c == '\n' || c == '\r' || c == '\t') {
                    i++;
                } else {
                    break;
                }
            }
        }

        Object value(int depth) {
            if (depth > MAX_DEPTH) {
                throw error("nesting too deep");
            }
            if (i >= s.length()) {
                throw error("unexpected end of input");
            }
            char c = s.charAt(i);
            switch (c) {
                case '{':
                    return object(depth);
                case '[':
                    return array(depth);
                case '"':
                    return string();
                case 't':
                    return literal("true", Boolean.TRUE);
                case 'f':
                    return literal("false", Boolean.FALSE);
                case 'n':
                    return literal("null", null);
                default:
                    if (c == '-' || (c >= '0' && c <= '9')) {
                        return number();
                    }
                    throw error("unexpected character '" + c + "'");
            }
        }

        Object literal(String word, Object v) {
            if (!s.startsWith(word, i)) {
                throw error("invalid literal");
            }
            i += word.length();
            return v;
        }

        Map<String, Object> object(int depth) {
            Map<String, Object> m = new LinkedHashMap<>();
            i++;
            ws();
            if (i < s.length() && s.charAt(i) == '}') {
                i++;
                return m;
            }
            for (;;) {
                ws();
                if (i >= s.length() || s.charAt(i) != '"') {
                    throw error("expected a property name");
                }
                String k = string();
                ws();
                if (i >= s.length() || s.charAt(i) != ':') {
                    throw error("expected ':'");
                }
                i++;
                ws();
                m.put(k, value(depth + 1));
                ws();
                if (i >= s.length()) {
                    throw error("unterminated object");
                }
                char c = s.charAt(i++);
                if (c == '}') {
                    return m;
                }
                if (c != ',') {
                    i--;
                    throw error("expected ',' or '}'");
                }
            }
        }

        List<Object> array(int depth) {
            List<Object> l = new ArrayList<>();
            i++;
            ws();
            if (i < s.length() && s.charAt(i) == ']') {
                i++;
                return l;
            }
            for (;;) {
                ws();
                l.add(value(depth + 1));
                ws();
                if (i >= s.length()) {
                    throw error("unterminated array");
                }
                char c = s.charAt(i++);
                if (c == ']') {
                    return l;
                }
                if (c != ',') {
                    i--;
                    throw error("expected ',' or ']'");
                }
            }
        }

        String string() {
            i++; // opening quote
            StringBuilder b = null;
            int start = i;
            for (;;) {
                if (i >= s.length()) {
                    throw error("unterminated string");
                }
                char c = s.charAt(i);
                if (c == '"') {
                    String out = b == null ? s.substring(start, i) : b.append(s, start, i).toString();
                    i++;
                    return out;
                }
                if (c < 0x20) {
                    throw error("control character in string");
                }
                if (c != '\\') {
                    i++;
                    continue;
                }
                if (b == null) {
                    b = new StringBuilder();
                }
                b.append(s, start, i);
                i++;
                if (i >= s.length()) {
                    throw error("unterminated escape");
                }
                char e = s.charAt(i++);
                switch (e) {
                    case '"': b.append('"'); break;
                    case '\\': b.append('\\'); break;
                    case '/': b.append('/'); break;
                    case 'b': b.append('\b'); break;
                    case 'f': b.append('\f'); break;
                    case 'n': b.append('\n'); break;
                    case 'r': b.append('\r'); break;
                    case 't': b.append('\t'); break;
                    case 'u':
                        if (i + 4 > s.length()) {
                            throw error("bad \\u escape");
                        }
                        try {
                            b.append((char) Integer.parseInt(s.substring(i, i + 4), 16));
                        } catch (NumberFormatException ex) {
                            throw error("bad \\u escape");
                        }
                        i += 4;
                        break;
                    default:
                        i--;
                        throw error("bad escape '\\" + e + "'");
                }
                start = i;
            }
        }

        Object number() {
            int start = i;
            if (s.charAt(i) == '-') {
                i++;
            }
            int digits = i;
            while (i < s.length() && s.charAt(i) >= '0' && s.charAt(i) <= '9') {
                i++;
            }
            if (i == digits || (s.charAt(digits) == '0' && i - digits > 1)) {
                throw error("invalid number");
            }
            boolean integral = true;
            if (i < s.length() && s.charAt(i) == '.') {
                integral = false;
                i++;
                int f = i;
                while (i < s.length() && s.charAt(i) >= '0' && s.charAt(i) <= '9') {
                    i++;
                }
                if (i == f) {
                    throw error("invalid number");
                }
            }
            if (i < s.length() && (s.charAt(i) == 'e' || s.charAt(i) == 'E')) {
                integral = false;
                i++;
                if (i < s.length() && (s.charAt(i) == '+' || s.charAt(i) == '-')) {
                    i++;
                }
                int f = i;
                while (i < s.length() && s.charAt(i) >= '0' && s.charAt(i) <= '9') {
                    i++;
                }
                if (i == f) {
                    throw error("invalid number");
                }
            }
            String t = s.substring(start, i);
            if (!integral) {
                return Double.valueOf(t);
            }
            if (t.length() <= 9) {
                return Integer.valueOf(t);
            }
            BigInteger big = new BigInteger(t);
            if (big.bitLength() < 32) {
                return big.intValue();
            }
            if (big.bitLength() < 64) {
                return big.longValue();
            }
            return big;
        }
    }

    // ------------------------------------------------------------------ binding --

    /** Binds a parsed value to {@code type} (a Class, ParameterizedType, …). */
    static Object convert(Object v, Type type) {
        return convert(v, type, "$", 0);
    }

    private static JsonException mismatch(String path, Object v, Type type) {
        String got = v == null ? "null" : v instanceof Map ? "an object" : v instanceof List ? "an array"
                : v instanceof String ? "a string" : v instanceof Boolean ? "a boolean" : "a number";
        return new JsonException("cannot convert " + got + " to " + type.getTypeName() + " at " + path);
    }

    private static Class<?> raw(Type t) {
        if (t instanceof Class) {
            return (Class<?>) t;
        }
        if (t instanceof ParameterizedType) {
            return raw(((ParameterizedType) t).getRawType());
        }
        if (t instanceof GenericArrayType) {
            return Array.newInstance(raw(((GenericArrayType) t).getGenericComponentType()), 0).getClass();
        }
        if (t instanceof TypeVariable) {
            Type[] b = ((TypeVariable<?>) t).getBounds();
            return b.length == 0 ? Object.class : raw(b[0]);
        }
        if (t instanceof WildcardType) {
            Type[] b = ((WildcardType) t).getUpperBounds();
            return b.length == 0 ? Object.class : raw(b[0]);
        }
        return Object.class;
    }

    private static Type typeArg(Type t, int n) {
        if (t instanceof ParameterizedType) {
            Type[] a = ((ParameterizedType) t).getActualTypeArguments();
            if (n < a.length) {
                return a[n];
            }
        }
        return Object.class;
    }

    @SuppressWarnings({"unchecked", "rawtypes"})
    private static Object convert(Object v, Type type, String path, int depth) {
        if (depth > MAX_DEPTH) {
            throw new JsonException("nesting too deep at " + path);
        }
        Class<?> c = raw(type);
        if (c == Object.class) {
            return v;
        }
        if (c.isPrimitive()) {
            if (v == null) {
                return primitiveDefault(c);
            }
            return scalar(v, boxed(c), type, path);
        }
        if (v == null) {
            return c == Optional.class ? Optional.empty() : null;
        }
        if (c == Optional.class) {
            return Optional.ofNullable(convert(v, typeArg(type, 0), path, depth + 1));
        }
        if (c == String.class || c == CharSequence.class) {
            if (v instanceof String) {
                return v;
            }
            if (v instanceof Number || v instanceof Boolean) {
                return v.toString();
            }
            // Lenient: an object or array handed to a String parameter arrives as JSON text.
            return write(v);
        }
        if (Number.class.isAssignableFrom(c) || c == Boolean.class || c == Character.class) {
            return scalar(v, c, type, path);
        }
        if (c.isEnum()) {
            return enumValue(v, (Class<? extends Enum>) c, type, path);
        }
        if (c == byte[].class) {
            if (v instanceof String) {
                try {
                    return Base64.getDecoder().decode((String) v);
                } catch (IllegalArgumentException e) {
                    throw new JsonException("invalid base64 at " + path);
                }
            }
        }
        if (c.isArray()) {
            if (!(v instanceof List)) {
                throw mismatch(path, v, type);
            }
            List<?> l = (List<?>) v;
            Type ct = type instanceof GenericArrayType ? ((GenericArrayType) type).getGenericComponentType()
                    : c.getComponentType();
            Object arr = Array.newInstance(c.getComponentType(), l.size());
            for (int k = 0; k < l.size(); k++) {
                Array.set(arr, k, convert(l.get(k), ct, path + "[" + k + "]", depth + 1));
            }
            return arr;
        }
        if (Collection.class.isAssignableFrom(c) || c == Iterable.class) {
            if (!(v instanceof List)) {
                throw mismatch(path, v, type);
            }
            List<?> l = (List<?>) v;
            Type et = typeArg(type, 0);
            Collection out = newCollection(c, raw(et), path);
            for (int k = 0; k < l.size(); k++) {
                out.add(convert(l.get(k), et, path + "[" + k + "]", depth + 1));
            }
            return out;
        }
        if (Map.class.isAssignableFrom(c)) {
            if (!(v instanceof Map)) {
                throw mismatch(path, v, type);
            }
            Type kt = typeArg(type, 0);
            Type vt = typeArg(type, 1);
            Map out = newMap(c, path);
            for (Map.Entry<String, Object> e : ((Map<String, Object>) v).entrySet()) {
                Object key = raw(kt) == Object.class || raw(kt) == String.class ? e.getKey()
                        : convert(e.getKey(), kt, path + "." + e.getKey(), depth + 1);
                out.put(key, convert(e.getValue(), vt, path + "." + e.getKey(), depth + 1));
            }
            return out;
        }
        if (c == Date.class && v instanceof Number) {
            return new Date(((Number) v).longValue());
        }
        if (c.isInterface() || Modifier.isAbstract(c.getModifiers())) {
            throw new JsonException("cannot create an instance of " + c.getName() + " at " + path);
        }
        if (!(v instanceof Map)) {
            throw mismatch(path, v, type);
        }
        if (c.isRecord()) {
            return record(c, (Map<String, Object>) v, path, depth);
        }
        return pojo(c, (Map<String, Object>) v, path, depth);
    }

    private static Object primitiveDefault(Class<?> c) {
        if (c == boolean.class) {
            return Boolean.FALSE;
        }
        if (c == char.class) {
            return '\0';
        }
        return scalar(0, boxed(c), c, "$");
    }

    private static Class<?> boxed(Class<?> c) {
        if (c == int.class) return Integer.class;
        if (c == long.class) return Long.class;
        if (c == double.class) return Double.class;
        if (c == float.class) return Float.class;
        if (c == short.class) return Short.class;
        if (c == byte.class) return Byte.class;
        if (c == boolean.class) return Boolean.class;
        if (c == char.class) return Character.class;
        return c;
    }

    private static Object scalar(Object v, Class<?> c, Type type, String path) {
        if (c == Boolean.class) {
            if (v instanceof Boolean) {
                return v;
            }
            if ("true".equals(v) || "false".equals(v)) {
                return Boolean.valueOf((String) v);
            }
            throw mismatch(path, v, type);
        }
        if (c == Character.class) {
            if (v instanceof String && ((String) v).length() == 1) {
                return ((String) v).charAt(0);
            }
            throw mismatch(path, v, type);
        }
        BigDecimal d;
        if (v instanceof Number) {
            d = v instanceof Double ? BigDecimal.valueOf((Double) v) : new BigDecimal(v.toString());
        } else if (v instanceof String) {
            try {
                d = new BigDecimal(((String) v).trim());
            } catch (NumberFormatException e) {
                throw mismatch(path, v, type);
            }
        } else {
            throw mismatch(path, v, type);
        }
        try {
            if (c == Integer.class) return d.toBigInteger().intValueExact();
            if (c == Long.class) return d.toBigInteger().longValueExact();
            if (c == Short.class) return d.toBigInteger().shortValueExact();
            if (c == Byte.class) return d.toBigInteger().byteValueExact();
        } catch (ArithmeticException e) {
            throw new JsonException("number " + v + " out of range for " + type.getTypeName() + " at " + path);
        }
        if (c == Double.class || c == Number.class) return d.doubleValue();
        if (c == Float.class) return d.floatValue();
        if (c == BigDecimal.class) return d;
        if (c == BigInteger.class) return d.toBigInteger();
        throw new JsonException("unsupported number type " + c.getName() + " at " + path);
    }

    @SuppressWarnings({"unchecked", "rawtypes"})
    private static Object enumValue(Object v, Class<? extends Enum> c, Type type, String path) {
        Object[] constants = c.getEnumConstants();
        if (v instanceof String) {
            for (Object k : constants) {
                if (((Enum) k).name().equals(v)) {
                    return k;
                }
            }
            for (Object k : constants) {
                if (((Enum) k).name().equalsIgnoreCase((String) v)) {
                    return k;
                }
            }
            throw new JsonException("'" + v + "' is not one of the values of " + c.getName() + " at " + path);
        }
        if (v instanceof Integer && (Integer) v >= 0 && (Integer) v < constants.length) {
            return constants[(Integer) v];
        }
        throw mismatch(path, v, type);
    }

    @SuppressWarnings({"rawtypes", "unchecked"})
    private static Collection newCollection(Class<?> c, Class<?> element, String path) {
        if (c.isAssignableFrom(ArrayList.class)) return new ArrayList<>();
        if (c.isAssignableFrom(LinkedHashSet.class)) return new LinkedHashSet<>();
        if (c.isAssignableFrom(TreeSet.class)) return new TreeSet<>();
        if (c == EnumSet.class && element.isEnum()) return EnumSet.noneOf((Class) element);
        return (Collection) instantiate(c, path);
    }

    @SuppressWarnings("rawtypes")
    private static Map newMap(Class<?> c, String path) {
        if (c.isAssignableFrom(LinkedHashMap.class)) return new LinkedHashMap<>();
        if (c.isAssignableFrom(TreeMap.class)) return new TreeMap<>();
        return (Map) instantiate(c, path);
    }

    private static Object instantiate(Class<?> c, String path) {
        Constructor<?> k;
        try {
            k = c.getDeclaredConstructor();
        } catch (NoSuchMethodException e) {
            String why = c.getEnclosingClass() != null && !Modifier.isStatic(c.getModifiers())
                    ? " (it is a non-static inner class: make it static)"
                    : " (it has no zero-argument constructor)";
            throw new JsonException("cannot create an instance of " + c.getName() + why + " at " + path);
        }
        try {
            k.setAccessible(true);
            return k.newInstance();
        } catch (ReflectiveOperationException | RuntimeException e) {
            Throwable t = e.getCause() != null ? e.getCause() : e;
            throw new JsonException("cannot create an instance of " + c.getName() + " at " + path + ": " + t);
        }
    }

    private static Object record(Class<?> c, Map<String, Object> m, String path, int depth) {
        RecordComponent[] comps = c.getRecordComponents();
        Object[] args = new Object[comps.length];
        Class<?>[] types = new Class<?>[comps.length];
        Map<String, String> lower = lowerKeys(m);
        for (int k = 0; k < comps.length; k++) {
            RecordComponent rc = comps[k];
            types[k] = rc.getType();
            String key = m.containsKey(rc.getName()) ? rc.getName() : lower.get(rc.getName().toLowerCase(Locale.ROOT));
            Object v = key == null ? null : m.get(key);
            args[k] = convert(v, rc.getGenericType(), path + "." + rc.getName(), depth + 1);
        }
        try {
            Constructor<?> k = c.getDeclaredConstructor(types);
            k.setAccessible(true);
            return k.newInstance(args);
        } catch (ReflectiveOperationException | RuntimeException e) {
            Throwable t = e.getCause() != null ? e.getCause() : e;
            throw new JsonException("cannot create " + c.getName() + " at " + path + ": " + t);
        }
    }

    private static Map<String, String> lowerKeys(Map<String, Object> m) {
        Map<String, String> lower = new HashMap<>();
        for (String k : m.keySet()) {
            lower.putIfAbsent(k.toLowerCase(Locale.ROOT), k);
        }
        return lower;
    }

    /** How to set one property of a POJO class. */
    private static final class Setter {
        final Method method;
        final Field field;
        final Type type;

        Setter(Method method, Field field) {
            this.method = method;
            this.field = field;
            this.type = method != null ? method.getGenericParameterTypes()[0] : field.getGenericType();
        }

        void set(Object target, Object value) throws ReflectiveOperationException {
            if (method != null) {
                method.invoke(target, value);
            } else {
                field.set(target, value);
            }
        }
    }

    private static final Map<Class<?>, Map<String, Setter>> SETTERS = new HashMap<>();

    /** Property name (exact and lower-cased) to setter: public setters win over fields. */
    private static synchronized Map<String, Setter> setters(Class<?> c) {
        Map<String, Setter> s = SETTERS.get(c);
        if (s != null) {
            return s;
        }
        s = new HashMap<>();
        for (Class<?> k = c; k != null && k != Object.class; k = k.getSuperclass()) {
            for (Field f : k.getDeclaredFields()) {
                int mod = f.getModifiers();
                if (Modifier.isStatic(mod) || Modifier.isTransient(mod) || Modifier.isFinal(mod) || f.isSynthetic()) {
                    continue;
                }
                try {
                    f.setAccessible(true);
                } catch (RuntimeException e) {
                    continue;
                }
                Setter st = new Setter(null, f);
                s.putIfAbsent(f.getName(), st);
                s.putIfAbsent(f.getName().toLowerCase(Locale.ROOT), st);
            }
        }
        for (Method m : c.getMethods()) {
            String n = m.getName();
            if (n.length() > 3 && n.startsWith("set") && m.getParameterCount() == 1
                    && !Modifier.isStatic(m.getModifiers()) && !m.isBridge()) {
                String prop = propertyName(n.substring(3));
                try {
                    m.setAccessible(true);
                } catch (RuntimeException e) {
                    continue;
                }
                Setter st = new Setter(m, null);
                s.put(prop, st);
                s.put(prop.toLowerCase(Locale.ROOT), st);
                String beanName = Character.toLowerCase(n.charAt(3)) + n.substring(4);
                s.putIfAbsent(beanName, st);
            }
        }
        SETTERS.put(c, s);
        return s;
    }

    private static Object pojo(Class<?> c, Map<String, Object> m, String path, int depth) {
        Object target = instantiate(c, path);
        Map<String, Setter> setters = setters(c);
        for (Map.Entry<String, Object> e : m.entrySet()) {
            String key = e.getKey();
            Setter st = setters.get(key);
            if (st == null) {
                st = setters.get(key.toLowerCase(Locale.ROOT));
            }
            if (st == null) {
                continue; // unknown properties are ignored, as Lambda's serializer does
            }
            Object value = convert(e.getValue(), st.type, path + "." + key, depth + 1);
            try {
                st.set(target, value);
            } catch (ReflectiveOperationException | RuntimeException ex) {
                Throwable t = ex.getCause() != null ? ex.getCause() : ex;
                throw new JsonException("cannot set " + key + " of " + c.getName() + " at " + path + ": " + t);
            }
        }
        return target;
    }

    // ------------------------------------------------------------ serialization --

    static String write(Object v) {
        StringBuilder b = new StringBuilder();
        write(v, b, 0);
        return b.toString();
    }

    static byte[] writeBytes(Object v) {
        return write(v).getBytes(StandardCharsets.UTF_8);
    }

    /** Jackson's default property naming: {@code URL} → {@code url}, {@code FooBar} → {@code fooBar}. */
    static String propertyName(String afterPrefix) {
        int n = 0;
        while (n < afterPrefix.length() && Character.isUpperCase(afterPrefix.charAt(n))) {
            n++;
        }
        if (n == 0) {
            return afterPrefix;
        }
        if (n > 1 && n < afterPrefix.length()) {
            n--; // "URLPath" → "urlPath"
        }
        return afterPrefix.substring(0, n).toLowerCase(Locale.ROOT) + afterPrefix.substring(n);
    }

    /** Getter and field readers of a POJO class, in a stable order. */
    private static final Map<Class<?>, List<Object[]>> GETTERS = new HashMap<>();

    private static synchronized List<Object[]> getters(Class<?> c) {
        List<Object[]> g = GETTERS.get(c);
        if (g != null) {
            return g;
        }
        Map<String, Object> byName = new LinkedHashMap<>();
        // Declared field order first (superclass fields before subclass fields) ...
        List<Class<?>> chain = new ArrayList<>();
        for (Class<?> k = c; k != null && k != Object.class; k = k.getSuperclass()) {
            chain.add(0, k);
        }
        for (Class<?> k : chain) {
            for (Field f : k.getDeclaredFields()) {
                int mod = f.getModifiers();
                if (Modifier.isStatic(mod) || Modifier.isTransient(mod) || f.isSynthetic()) {
                    continue;
                }
                boolean readable = Modifier.isPublic(mod);
                if (readable) {
                    try {
                        f.setAccessible(true);
                    } catch (RuntimeException e) {
                        readable = false;
                    }
                }
                byName.put(f.getName(), readable ? f : null);
            }
        }
        // ... then the getters, which win over fields of the same name.
        List<Method> methods = new ArrayList<>(List.of(c.getMethods()));
        methods.sort(new java.util.Comparator<Method>() {
            @Override
            public int compare(Method a, Method b) {
                return a.getName().compareTo(b.getName());
            }
        });
        for (Method m : methods) {
            if (Modifier.isStatic(m.getModifiers()) || m.getParameterCount() != 0 || m.isBridge()
                    || m.getDeclaringClass() == Object.class) {
                continue;
            }
            String n = m.getName();
            String prop;
            if (n.startsWith("get") && n.length() > 3 && m.getReturnType() != void.class) {
                prop = propertyName(n.substring(3));
            } else if (n.startsWith("is") && n.length() > 2
                    && (m.getReturnType() == boolean.class || m.getReturnType() == Boolean.class)) {
                prop = propertyName(n.substring(2));
            } else {
                continue;
            }
            try {
                m.setAccessible(true);
            } catch (RuntimeException e) {
                continue;
            }
            byName.put(prop, m);
        }
        g = new ArrayList<>();
        for (Map.Entry<String, Object> e : byName.entrySet()) {
            if (e.getValue() != null) {
                g.add(new Object[] {e.getKey(), e.getValue()});
            }
        }
        GETTERS.put(c, g);
        return g;
    }

    private static void write(Object v, StringBuilder b, int depth) {
        if (depth > MAX_DEPTH) {
            throw new JsonException("the result nests too deep (a cycle?)");
        }
        if (v == null) {
            b.append("null");
        } else if (v instanceof String || v instanceof Character || v instanceof CharSequence) {
            string(v.toString(), b);
        } else if (v instanceof Boolean) {
            b.append(v);
        } else if (v instanceof Double || v instanceof Float) {
            double d = ((Number) v).doubleValue();
            if (Double.isNaN(d) || Double.isInfinite(d)) {
                string(v.toString(), b);
            } else {
                b.append(v);
            }
        } else if (v instanceof BigDecimal) {
            b.append(((BigDecimal) v).toString());
        } else if (v instanceof Number) {
            b.append(v);
        } else if (v instanceof Map) {
            b.append('{');
            boolean first = true;
            for (Map.Entry<?, ?> e : ((Map<?, ?>) v).entrySet()) {
                if (!first) {
                    b.append(',');
                }
                first = false;
                Object k = e.getKey();
                string(k instanceof Enum ? ((Enum<?>) k).name() : String.valueOf(k), b);
                b.append(':');
                write(e.getValue(), b, depth + 1);
            }
            b.append('}');
        } else if (v instanceof Iterable) {
            b.append('[');
            boolean first = true;
            for (Object o : (Iterable<?>) v) {
                if (!first) {
                    b.append(',');
                }
                first = false;
                write(o, b, depth + 1);
            }
            b.append(']');
        } else if (v instanceof byte[]) {
            string(Base64.getEncoder().encodeToString((byte[]) v), b);
        } else if (v.getClass().isArray()) {
            b.append('[');
            int n = Array.getLength(v);
            for (int k = 0; k < n; k++) {
                if (k > 0) {
                    b.append(',');
                }
                write(Array.get(v, k), b, depth + 1);
            }
            b.append(']');
        } else if (v instanceof Enum) {
            string(((Enum<?>) v).name(), b);
        } else if (v instanceof Optional) {
            write(((Optional<?>) v).orElse(null), b, depth + 1);
        } else if (v instanceof Date) {
            b.append(((Date) v).getTime());
        } else if (v instanceof java.time.temporal.TemporalAccessor || v instanceof java.time.temporal.TemporalAmount
                || v instanceof java.util.UUID || v instanceof java.net.URI || v instanceof java.net.URL
                || v instanceof java.nio.file.Path || v instanceof java.io.File || v instanceof Locale
                || v instanceof java.util.TimeZone || v instanceof java.nio.charset.Charset || v instanceof Class) {
            string(v instanceof Class ? ((Class<?>) v).getName() : v.toString(), b);
        } else if (v.getClass().isRecord()) {
            b.append('{');
            boolean first = true;
            for (RecordComponent rc : v.getClass().getRecordComponents()) {
                if (!first) {
                    b.append(',');
                }
                first = false;
                string(rc.getName(), b);
                b.append(':');
                try {
                    Method acc = rc.getAccessor();
                    acc.setAccessible(true);
                    write(acc.invoke(v), b, depth + 1);
                } catch (ReflectiveOperationException | RuntimeException e) {
                    throw new JsonException("cannot read " + rc.getName() + " of " + v.getClass().getName() + ": " + e);
                }
            }
            b.append('}');
        } else {
            b.append('{');
            boolean first = true;
            for (Object[] g : getters(v.getClass())) {
                Object value;
                try {
                    value = g[1] instanceof Method ? ((Method) g[1]).invoke(v) : ((Field) g[1]).get(v);
                } catch (ReflectiveOperationException | RuntimeException e) {
                    Throwable t = e.getCause() != null ? e.getCause() : e;
                    throw new JsonException("cannot read " + g[0] + " of " + v.getClass().getName() + ": " + t);
                }
                if (!first) {
                    b.append(',');
                }
                first = false;
                string((String) g[0], b);
                b.append(':');
                write(value, b, depth + 1);
            }
            b.append('}');
        }
    }

    private static final char[] HEX = "0123456789abcdef".toCharArray();

    static void string(String s, StringBuilder b) {
        b.append('"');
        int start = 0;
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            String rep;
            if (c == '"') {
                rep = "\\\"";
            } else if (c == '\\') {
                rep = "\\\\";
            } else if (c >= 0x20) {
                continue;
            } else if (c == '\n') {
                rep = "\\n";
            } else if (c == '\r') {
                rep = "\\r";
            } else if (c == '\t') {
                rep = "\\t";
            } else if (c == '\b') {
                rep = "\\b";
            } else if (c == '\f') {
                rep = "\\f";
            } else {
                rep = "\\u00" + HEX[c >> 4] + HEX[c & 0xf];
            }
            b.append(s, start, i).append(rep);
            start = i + 1;
        }
        b.append(s, start, s.length()).append('"');
    }

    /** Convenience for the runtime's own error bodies. */
    static Map<String, Object> object(Object... kv) {
        Map<String, Object> m = new LinkedHashMap<>();
        for (int i = 0; i + 1 < kv.length; i += 2) {
            m.put((String) kv[i], kv[i + 1]);
        }
        return m;
    }
}
