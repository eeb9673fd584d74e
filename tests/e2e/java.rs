//! Java functions (`java17`/`java21`) on the host JDK: the example built from source by
//! `nimbus deploy` (Lambda API, function URL, route); handlers by Lambda's Java conventions
//! (POJO, `RequestStreamHandler`, static `String` method) deployed as classes and as a jar;
//! Lambda-shaped errors (thrown exceptions, bad events, init errors); warm reuse; a source
//! tree with `lib/` dependencies; javac failures. These need a JDK and fail (not skip)
//! without one.

use base64::Engine;
use nimbus_tests::*;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// Panics unless `java` and `javac` run.
fn require_jdk() {
    for tool in ["java", "javac"] {
        match Command::new(tool).arg("-version").output() {
            Ok(o) if o.status.success() => {}
            other => panic!(
                "these tests need a JDK (`{tool} -version` gave {other:?}): apt-get install openjdk-17-jdk-headless — .ci/run installs it"
            ),
        }
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The JSON body of a v2 structured response.
fn body_json(response: &Value) -> Value {
    serde_json::from_str(response["body"].as_str().expect("body is a string")).unwrap()
}

/// Every file under `dir`, relative path → contents.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// A zip (or jar) of `(path, bytes)` entries.
fn zip_bytes(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut w = zip::ZipWriter::new(&mut buf);
        for (path, contents) in files {
            let opts = zip::write::SimpleFileOptions::default().unix_permissions(0o644);
            w.start_file(path.as_str(), opts).unwrap();
            w.write_all(contents).unwrap();
        }
        w.finish().unwrap();
    }
    buf.into_inner()
}

/// Compiles `sources` (written under `dir/src`) against Nimbus's Java API and `classpath`
/// into `dir/<out>`; returns that directory.
fn javac(dir: &Path, out: &str, sources: &[(&str, &str)], classpath: &[PathBuf]) -> PathBuf {
    let src = dir.join(format!("{out}-src"));
    write_files(&src, sources);
    let classes = dir.join(out);
    let mut cmd = Command::new("javac");
    cmd.args(["--release", "17", "-implicit:none", "-sourcepath"])
        .arg(repo_root().join("runtimes/java/src"))
        .arg("-d")
        .arg(&classes);
    if !classpath.is_empty() {
        cmd.arg("-cp").arg(std::env::join_paths(classpath).unwrap());
    }
    for (path, _) in sources {
        cmd.arg(src.join(path));
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "javac failed: {}", stderr(&o));
    classes
}

fn java_cfg(handler: &str) -> Value {
    json!({ "runtime": "java17", "handler": handler, "memory_mb": 256, "timeout_s": 10 })
}

/// The `REPORT` line's `Init Duration` in a `Tail` log, in ms.
fn init_duration_ms(r: &Invoked) -> Option<f64> {
    let tail = base64::engine::general_purpose::STANDARD
        .decode(r.header("x-amz-log-result")?)
        .ok()?;
    let tail = String::from_utf8(tail).ok()?;
    let at = tail.find("Init Duration: ")? + "Init Duration: ".len();
    tail[at..].split(' ').next()?.parse().ok()
}

#[test]
fn hello_java_example_builds_and_answers() {
    require_jdk();
    let s = Server::start(&[]);
    let dir = repo_root().join("examples/hello-java");
    let before = tree(&dir);
    let out = s.cli(&["--json", "deploy", dir.to_str().unwrap()]);
    let reply: Value = serde_json::from_str(&cli_ok(&out).unwrap()).unwrap();
    assert_eq!(reply[0]["function"]["name"], "hello-java", "{reply}");
    assert!(
        stderr(&out).contains("building hello-java with javac"),
        "{}",
        stderr(&out)
    );
    assert_eq!(tree(&dir), before, "the build must not touch the example");
    let (_, f) = s.get_json("/v1/functions/hello-java");
    assert_eq!(f["config"]["runtime"], "java17");
    assert_eq!(f["config"]["handler"], "example.Hello::handleRequest");

    // The Lambda Invoke API (a cold start: the JVM starts, and the runtime is compiled).
    let event = json!({
        "version": "2.0",
        "rawPath": "/direct",
        "pathParameters": {"name": "lambda"},
        "requestContext": {"http": {"method": "POST"}}
    });
    let r = s.invoke_with(
        "hello-java",
        event.to_string().into_bytes(),
        &[("X-Amz-Log-Type", "Tail")],
    );
    let v = r.ok();
    assert_eq!(v["statusCode"], 200, "{v}");
    let b = body_json(&v);
    assert_eq!(b["message"], "Hello, lambda from Java!");
    assert_eq!(b["path"], "/direct");
    assert_eq!(b["method"], "POST");
    assert_eq!(b["function"], "hello-java:$LATEST");
    assert_eq!(
        b["requestId"].as_str().unwrap(),
        r.header("x-amzn-requestid").unwrap()
    );
    let left = b["remainingMs"].as_i64().unwrap();
    assert!(left > 0 && left <= 10_000, "remaining time {left}");
    let init = init_duration_ms(&r).expect("a cold start reports Init Duration");
    eprintln!("hello-java: JVM start to first next (Init Duration): {init:.1} ms");
    assert!(init < 10_000.0, "init took {init} ms");

    // The function URL and the route from nimbus.toml.
    s.check_hello_example("hello-java", "/java/hello", "Java");

    // The handler's log line is captured.
    let logged = eventually(Duration::from_secs(5), || {
        let (_, v) = s.get_json("/v1/functions/hello-java/logs");
        v["logs"].as_array().is_some_and(|l| {
            l.iter()
                .any(|e| e["line"].as_str().unwrap_or("") == "greeting bob")
        })
    });
    assert!(logged, "the LambdaLogger line is in the function's log");

    // javac's output depends only on the sources: deploying again changes nothing.
    let again: Value = serde_json::from_str(
        &cli_ok(&s.cli(&["--json", "deploy", dir.to_str().unwrap()])).unwrap(),
    )
    .unwrap();
    assert_eq!(again[0]["version"], reply[0]["version"], "{again}");
}

/// Handlers in the shapes Lambda's Java runtime accepts.
const HANDLERS: &[(&str, &str)] = &[
    (
        "example/Pojo.java",
        r#"package example;

import com.amazonaws.services.lambda.runtime.Context;
import java.util.List;
import java.util.Map;

public class Pojo {
    public static class Person {
        public String name;
        private int age;
        private List<String> tags;
        public void setAge(int age) { this.age = age; }
        public void setTags(List<String> tags) { this.tags = tags; }
    }

    public static class Greeting {
        private final String message;
        private final int nextAge;
        public Map<String, Object> context;
        Greeting(String message, int nextAge) { this.message = message; this.nextAge = nextAge; }
        public String getMessage() { return message; }
        public int getNextAge() { return nextAge; }
        public boolean isAdult() { return nextAge > 18; }
    }

    private int calls;

    public Greeting handleRequest(Person p, Context ctx) {
        calls++;
        ctx.getLogger().log("pojo call " + calls);
        Greeting g = new Greeting("Hello " + p.name + " (" + (p.tags == null ? 0 : p.tags.size()) + " tags)", p.age + 1);
        g.context = Map.of(
            "requestId", ctx.getAwsRequestId(),
            "function", ctx.getFunctionName() + ":" + ctx.getFunctionVersion(),
            "arn", ctx.getInvokedFunctionArn(),
            "memory", ctx.getMemoryLimitInMB(),
            "remainingMs", ctx.getRemainingTimeInMillis(),
            "pid", System.getenv("AWS_LAMBDA_LOG_STREAM_NAME"),
            "calls", calls);
        return g;
    }
}
"#,
    ),
    (
        "example/Upper.java",
        r#"package example;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestStreamHandler;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;

public class Upper implements RequestStreamHandler {
    @Override
    public void handleRequest(InputStream in, OutputStream out, Context ctx) throws IOException {
        String text = new String(in.readAllBytes(), StandardCharsets.UTF_8).toUpperCase();
        out.write(("{\"upper\":" + text + ",\"fn\":\"" + ctx.getFunctionName() + "\"}").getBytes(StandardCharsets.UTF_8));
    }
}
"#,
    ),
    (
        "example/Echo.java",
        r#"package example;

public class Echo {
    public static String shout(String s) { return s + "!"; }
}
"#,
    ),
    (
        "example/Fail.java",
        r#"package example;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestHandler;
import java.io.IOException;
import java.util.Map;

public class Fail implements RequestHandler<Map<String, Object>, String> {
    @Override
    public String handleRequest(Map<String, Object> event, Context ctx) {
        if (Boolean.TRUE.equals(event.get("ok"))) {
            return "pid " + System.getenv("AWS_LAMBDA_LOG_STREAM_NAME");
        }
        throw new IllegalStateException("boom: " + event.get("why"), new IOException("disk on fire"));
    }
}
"#,
    ),
    (
        "example/BadInit.java",
        r#"package example;

public class BadInit {
    public BadInit() { throw new IllegalArgumentException("no config"); }
    public String handleRequest(String s) { return s; }
}
"#,
    ),
];

#[test]
fn java_handler_conventions_and_errors() {
    require_jdk();
    let s = Server::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let classes = tree(&javac(tmp.path(), "classes", HANDLERS, &[]));
    // Classes at the root of the package (how Lambda unpacks a deployed jar) ...
    let loose = zip_bytes(&classes);
    // ... and a jar inside the package.
    let jarred = zip_bytes(&[("app.jar".to_string(), zip_bytes(&classes))]);
    let deploy = |name: &str, handler: &str, zip: &[u8]| {
        let (status, body) = s.deploy_zip(name, java_cfg(handler), zip);
        assert!(status < 300, "deploy {name}: {status} {body}");
    };

    // A POJO in, a POJO out, from a jar; method named explicitly.
    deploy("jpojo", "example.Pojo::handleRequest", &jarred);
    let event = r#"{"name":"Ada","age":36,"tags":["x","y"],"unknown":{"ignored":true}}"#;
    let first = s.invoke("jpojo", event);
    let v = first.ok();
    assert_eq!(v["message"], "Hello Ada (2 tags)", "{v}");
    assert_eq!(v["nextAge"], 37);
    assert_eq!(v["adult"], true);
    let ctx = &v["context"];
    assert_eq!(
        ctx["requestId"].as_str().unwrap(),
        first.header("x-amzn-requestid").unwrap()
    );
    assert_eq!(ctx["function"], "jpojo:$LATEST");
    assert!(
        ctx["arn"].as_str().unwrap().ends_with(":function:jpojo"),
        "{ctx}"
    );
    assert_eq!(ctx["memory"], 256);
    let left = ctx["remainingMs"].as_i64().unwrap();
    assert!(left > 0 && left <= 10_000, "{left}");

    // Warm reuse: the same JVM answers, faster, with its state.
    let second = s.invoke("jpojo", event);
    let w = second.ok();
    assert_eq!(w["context"]["pid"], ctx["pid"], "the same process");
    assert_eq!(w["context"]["calls"], 2, "the same handler instance");
    assert!(
        second.elapsed < first.elapsed,
        "warm {:?} vs cold {:?}",
        second.elapsed,
        first.elapsed
    );

    // An event that does not fit the POJO is a Lambda-shaped unmarshal error.
    let r = s.invoke("jpojo", r#"{"name":"Ada","age":"old"}"#);
    assert!(r.function_error(), "{}", r.body);
    let e = r.json();
    assert_eq!(e["errorType"], "Runtime.UnmarshalError", "{e}");
    assert!(e["errorMessage"].as_str().unwrap().contains("age"), "{e}");
    assert_eq!(s.invoke("jpojo", event).ok()["context"]["pid"], ctx["pid"]);

    // RequestStreamHandler: no method in the handler name, raw bytes in and out.
    deploy("jstream", "example.Upper", &loose);
    let v = s.invoke("jstream", r#""shout""#).ok();
    assert_eq!(v, json!({"upper": "SHOUT", "fn": "jstream"}));

    // A static method taking and returning String, without Context.
    deploy("jecho", "example.Echo::shout", &loose);
    assert_eq!(s.invoke("jecho", r#""hi""#).ok(), json!("hi!"));

    // A thrown exception: errorType is its class, the trace ends at the handler, the
    // cause is kept, and the JVM lives on.
    deploy("jfail", "example.Fail::handleRequest", &loose);
    let r = s.invoke("jfail", r#"{"why":"testing"}"#);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
    let e = r.json();
    assert_eq!(e["errorType"], "java.lang.IllegalStateException", "{e}");
    assert_eq!(e["errorMessage"], "boom: testing");
    let trace: Vec<&str> = e["stackTrace"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        trace[0].starts_with("example.Fail.handleRequest(Fail.java:"),
        "{trace:?}"
    );
    assert!(
        !trace
            .iter()
            .any(|f| f.contains("dev.nimbus") || f.contains("reflect")),
        "{trace:?}"
    );
    assert_eq!(e["cause"]["errorType"], "java.io.IOException", "{e}");
    assert_eq!(e["cause"]["errorMessage"], "disk on fire");
    let pid = s.invoke("jfail", r#"{"ok":true}"#).ok();
    assert!(pid.as_str().unwrap().starts_with("pid "), "{pid}");
    // Through the CLI: non-zero exit, the error type on stderr.
    let out = s.cli(&["invoke", "jfail", "--data", r#"{"why":"cli"}"#]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("java.lang.IllegalStateException"),
        "{}",
        stderr(&out)
    );

    // Init errors: reported on /init/error, returned to the caller, the instance gone.
    deploy("jmissing", "example.Missing::handleRequest", &loose);
    let r = s.invoke("jmissing", "{}");
    assert!(r.function_error(), "{}", r.body);
    let e = r.json();
    assert_eq!(e["errorType"], "java.lang.ClassNotFoundException", "{e}");
    assert_eq!(e["errorMessage"], "Class not found: example.Missing");

    deploy("jnomethod", "example.Echo::whisper", &loose);
    let e = s.invoke("jnomethod", "{}").json();
    assert_eq!(e["errorType"], "java.lang.NoSuchMethodException", "{e}");
    assert!(
        e["errorMessage"].as_str().unwrap().contains("whisper"),
        "{e}"
    );

    deploy("jbadinit", "example.BadInit::handleRequest", &loose);
    let e = s.invoke("jbadinit", "{}").json();
    assert_eq!(e["errorType"], "java.lang.IllegalArgumentException", "{e}");
    assert_eq!(e["errorMessage"], "no config");

    // The platform's report names the runtime error type.
    let reported = eventually(Duration::from_secs(5), || {
        let (_, v) = s.get_json("/v1/functions/jmissing/logs");
        v["logs"].as_array().is_some_and(|l| {
            l.iter().any(|e| {
                e["line"]
                    .as_str()
                    .unwrap_or("")
                    .contains("Error Type: Runtime.ClassNotFound")
            })
        })
    });
    assert!(reported, "REPORT carries Runtime.ClassNotFound");
}

#[test]
fn java_source_with_lib_dependencies_and_build_errors() {
    require_jdk();
    let s = Server::start(&[]);
    let tmp = tempfile::tempdir().unwrap();

    // A dependency jar in lib/: on javac's class path and on the function's.
    let dep = javac(
        tmp.path(),
        "dep",
        &[(
            "dep/Greeter.java",
            "package dep;\npublic class Greeter { public static String greet(String n) { return \"Hi \" + n; } }\n",
        )],
        &[],
    );
    let project = tmp.path().join("project");
    std::fs::create_dir_all(project.join("lib")).unwrap();
    std::fs::write(project.join("lib/greeter.jar"), zip_bytes(&tree(&dep))).unwrap();
    write_files(
        &project,
        &[
            (
                "src/main/java/example/UsesDep.java",
                r#"package example;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestHandler;
import java.io.InputStream;
import java.util.Properties;

public class UsesDep implements RequestHandler<String, String> {
    @Override
    public String handleRequest(String name, Context ctx) {
        Properties p = new Properties();
        try (InputStream in = UsesDep.class.getResourceAsStream("/app.properties")) {
            p.load(in);
        } catch (Exception e) {
            throw new RuntimeException(e);
        }
        return dep.Greeter.greet(name) + p.getProperty("suffix");
    }
}
"#,
            ),
            ("src/main/resources/app.properties", "suffix=!\n"),
        ],
    );
    let out = s.cli(&[
        "deploy",
        project.to_str().unwrap(),
        "--name",
        "jdep",
        "--runtime",
        "java21",
        "--handler",
        "example.UsesDep",
    ]);
    cli_ok(&out).unwrap();
    assert!(stderr(&out).contains("with javac"), "{}", stderr(&out));
    assert_eq!(s.invoke("jdep", r#""Grace""#).ok(), json!("Hi Grace!"));

    // A compile error: javac's message, the file and a hint; nothing is deployed.
    write_files(
        &project,
        &[(
            "src/main/java/example/UsesDep.java",
            "package example;\npublic class UsesDep { int x = \"not a number\"; }\n",
        )],
    );
    let out = s.cli(&[
        "deploy",
        project.to_str().unwrap(),
        "--name",
        "jbroken",
        "--runtime",
        "java17",
        "--handler",
        "example.UsesDep",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("building project failed (javac"), "{err}");
    assert!(
        err.contains("UsesDep.java") && err.contains("incompatible types"),
        "{err}"
    );
    assert!(err.contains("hint:") && err.contains("lib/"), "{err}");
    let (status, _) = s.get_json("/v1/functions/jbroken");
    assert_eq!(status, 404);
}
