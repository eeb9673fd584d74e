//! The S3 suite (`tests/python/test_s3.py`): unmodified boto3 and the AWS CLI against
//! `nimbus serve --s3-listen` — buckets, objects with metadata, DeleteObjects, CopyObject,
//! listing thousands of keys, ranges and preconditions, a 20 MiB multipart upload,
//! presigned URLs, virtual hosts, signatures and scoped keys, `aws s3 sync` (with a multipart
//! file), a 100 MiB transfer-manager upload, uploads after empty PUTs on kept-alive
//! connections (botocore and `Expect: 100-continue`), bucket CORS
//! (configuration, browser preflights, a presigned PUT with `Origin`) and lifecycle
//! configurations, and objects acknowledged before a SIGKILL read back after the restart.

use nimbus_tests::*;

#[test]
fn boto3_and_aws_cli_suite() {
    let stdout = python::pytest(&["tests/python/test_s3.py"]);
    println!("{stdout}");
}

/// Bucket notifications (`tests/python/test_s3_notifications.py`): the configuration API,
/// S3's records to a function and a queue, EventBridge's events to a bus rule.
#[test]
fn bucket_notifications_suite() {
    let stdout = python::pytest(&["tests/python/test_s3_notifications.py"]);
    println!("{stdout}");
}

mod manifest {
    //! `[[functions.NAME.s3]]` in a manifest: `nimbus deploy` creates the bucket and sets
    //! the function's notification configurations through the native bucket API; S3 writes
    //! (the AWS CLI, signed with the admin key) invoke the function exactly for matching
    //! keys; a redeploy without the section removes the manifest's configurations and keeps
    //! one set through the S3 API.

    use super::*;
    use serde_json::{json, Value};
    use std::path::Path;
    use std::process::Output;
    use std::time::Duration;

    const HANDLER: &str = "def handler(event, context):\n    r = event['Records'][0]\n    return {'key': r['s3']['object']['key'], 'config': r['s3']['configurationId']}\n";

    fn manifest(with_s3: bool) -> String {
        let mut m =
            "[functions.thumbs]\nruntime = \"python3.11\"\nhandler = \"app.handler\"\n".to_string();
        if with_s3 {
            m.push_str(
                "\n[[functions.thumbs.s3]]\nbucket = \"uploads\"\nevents = [\"s3:ObjectCreated:*\"]\nprefix = \"in/\"\nsuffix = \".jpg\"\n",
            );
        }
        m
    }

    fn write_project(dir: &Path, with_s3: bool) {
        write_files(
            dir,
            &[("nimbus.toml", &manifest(with_s3)), ("app.py", HANDLER)],
        );
    }

    /// The AWS CLI against the S3 listener, signed with `creds`.
    fn aws(s3_url: &str, creds: &Credentials, args: &[&str]) -> Output {
        python::aws_cli(s3_url)
            .env("AWS_ACCESS_KEY_ID", &creds.id)
            .env("AWS_SECRET_ACCESS_KEY", &creds.secret)
            .args(args)
            .output()
            .expect("run aws")
    }

    fn aws_ok(s3_url: &str, creds: &Credentials, args: &[&str]) -> String {
        let out = aws(s3_url, creds, args);
        assert!(
            out.status.success(),
            "aws {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn signed_json(s: &Server, method: &str, path: &str, body: &Value) -> (u16, Value) {
        let body = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        let r = s.signed(method, path, &body, &s.admin());
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    /// `(key, configurationId)` of thumbs's succeeded async events, once there are `n`.
    fn invoked(s: &Server, n: usize) -> Vec<(String, String)> {
        let mut got = Vec::new();
        let ok = eventually(Duration::from_secs(60), || {
            let (_, v) = signed_json(s, "GET", "/v1/functions/thumbs/events", &Value::Null);
            got = v["events"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["status"] == "succeeded")
                .map(|e| {
                    let r: Value = serde_json::from_str(e["result"].as_str().unwrap()).unwrap();
                    (
                        r["key"].as_str().unwrap().to_string(),
                        r["config"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            got.len() >= n
        });
        assert!(ok, "{} of {n} invocations: {got:?}\n{}", got.len(), s.log());
        got.sort();
        got
    }

    fn put(s3_url: &str, creds: &Credentials, file: &Path, key: &str) {
        aws_ok(
            s3_url,
            creds,
            &[
                "s3api",
                "put-object",
                "--bucket",
                "uploads",
                "--key",
                key,
                "--body",
                file.to_str().unwrap(),
            ],
        );
    }

    #[test]
    fn deploy_sets_redeploy_removes_and_s3_api_configurations_stay() {
        let s3_port = free_port();
        let s3_url = format!("http://127.0.0.1:{s3_port}");
        let s = Server::start_with_auth(&["--s3-listen", &format!("127.0.0.1:{s3_port}")]);
        let admin = s.admin();
        let project = tempfile::tempdir().unwrap();
        write_project(project.path(), true);
        let out = cli_ok(&s.cli(&["deploy", project.path().to_str().unwrap()])).unwrap();
        assert!(out.contains("bucket uploads created"), "{out}");
        assert!(
            out.contains("s3 trigger: bucket uploads (s3:ObjectCreated:* on in/*.jpg) → thumbs"),
            "{out}"
        );
        let (status, config) =
            signed_json(&s, "GET", "/v1/buckets/uploads/notifications", &Value::Null);
        assert_eq!(status, 200, "{config}");
        assert_eq!(
            config["functions"],
            json!([{
                "id": "nimbus:thumbs:1",
                "arn": "arn:aws:lambda:us-east-1:000000000000:function:thumbs",
                "events": ["s3:ObjectCreated:*"],
                "filter": {"prefix": "in/", "suffix": ".jpg"},
            }])
        );
        // Deploying again changes nothing (no second bucket creation, the same configuration).
        let again = cli_ok(&s.cli(&["deploy", project.path().to_str().unwrap()])).unwrap();
        assert!(!again.contains("bucket uploads created"), "{again}");
        let (_, same) = signed_json(&s, "GET", "/v1/buckets/uploads/notifications", &Value::Null);
        assert_eq!(same, config);

        // A configuration set through the S3 API, next to the manifest's (S3's Put replaces
        // the whole configuration: the manifest's is read and sent back with it).
        let current: Value = serde_json::from_str(&aws_ok(
            &s3_url,
            &admin,
            &[
                "s3api",
                "get-bucket-notification-configuration",
                "--bucket",
                "uploads",
            ],
        ))
        .unwrap();
        let mut lambdas = current["LambdaFunctionConfigurations"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(lambdas.len(), 1, "{current}");
        lambdas.push(json!({
            "Id": "api-set",
            "LambdaFunctionArn": "arn:aws:lambda:us-east-1:000000000000:function:thumbs",
            "Events": ["s3:ObjectCreated:*"],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "api/"}]}},
        }));
        let body = json!({ "LambdaFunctionConfigurations": lambdas }).to_string();
        aws_ok(
            &s3_url,
            &admin,
            &[
                "s3api",
                "put-bucket-notification-configuration",
                "--bucket",
                "uploads",
                "--notification-configuration",
                &body,
            ],
        );

        let file = project.path().join("object.bin");
        std::fs::write(&file, b"bytes").unwrap();
        for key in ["in/skip.png", "out/skip.jpg", "in/cat.jpg", "api/note.txt"] {
            put(&s3_url, &admin, &file, key);
        }
        let got = invoked(&s, 2);
        assert_eq!(
            got,
            [
                ("api/note.txt".to_string(), "api-set".to_string()),
                ("in/cat.jpg".to_string(), "nimbus:thumbs:1".to_string()),
            ]
        );

        // Redeploy without the section: the manifest's configuration goes, the S3 API's stays.
        write_project(project.path(), false);
        let out = cli_ok(&s.cli(&["deploy", project.path().to_str().unwrap()])).unwrap();
        assert!(
            out.contains("s3 triggers of thumbs removed from bucket uploads"),
            "{out}"
        );
        let (_, config) = signed_json(&s, "GET", "/v1/buckets/uploads/notifications", &Value::Null);
        let ids: Vec<&str> = config["functions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["api-set"], "{config}");
        // Delivery is in order: once api/later.txt arrived, in/dog.jpg would have too.
        put(&s3_url, &admin, &file, "in/dog.jpg");
        put(&s3_url, &admin, &file, "api/later.txt");
        let got = invoked(&s, 3);
        assert!(
            got.iter().all(|(k, _)| k != "in/dog.jpg"),
            "no configuration matches in/dog.jpg any more: {got:?}"
        );
        assert!(got.iter().any(|(k, _)| k == "api/later.txt"), "{got:?}");
        // A later deploy without the section finds nothing to remove.
        let out = cli_ok(&s.cli(&["deploy", project.path().to_str().unwrap()])).unwrap();
        assert!(!out.contains("s3 trigger"), "{out}");
    }

    #[test]
    fn the_bucket_api_checks_input_and_policies() {
        let s3_port = free_port();
        let s = Server::start_with_auth(&["--s3-listen", &format!("127.0.0.1:{s3_port}")]);
        let fn_path = "/v1/buckets/pics/notifications/functions/thumbs";
        let entry = json!({"configurations": [{"id": "1", "events": ["s3:ObjectCreated:*"]}]});
        // No bucket yet: 404.
        let (status, v) = signed_json(&s, "PUT", fn_path, &entry);
        assert_eq!(status, 404, "{v}");
        assert_eq!(v["type"], "ResourceNotFoundException");
        let (status, v) = signed_json(&s, "PUT", "/v1/buckets/pics", &Value::Null);
        assert_eq!((status, v["created"].clone()), (200, json!(true)), "{v}");
        let (status, v) = signed_json(&s, "PUT", "/v1/buckets/pics", &Value::Null);
        assert_eq!(
            (status, v["created"].clone()),
            (200, json!(false)),
            "idempotent: {v}"
        );
        let (status, v) = signed_json(&s, "PUT", "/v1/buckets/Bad_Name", &Value::Null);
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["type"], "InvalidParameterValueException");
        // No such function: the destination check refuses it.
        let (status, v) = signed_json(&s, "PUT", fn_path, &entry);
        assert_eq!(status, 400, "{v}");
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .contains("Unable to validate"),
            "{v}"
        );
        let (status, v) = s.deploy_signed(
            "thumbs",
            python_cfg("app.handler"),
            &[("app.py", HANDLER)],
            &s.admin(),
        );
        assert!(status < 300, "{v}");
        let (status, v) = signed_json(&s, "PUT", fn_path, &entry);
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["functions"][0]["id"], "nimbus:thumbs:1");
        for (bad, why) in [
            (
                json!({"configurations": [{"id": "a:b", "events": ["s3:ObjectCreated:*"]}]}),
                "configuration id",
            ),
            (
                json!({"configurations": [{"id": "1", "events": ["s3:ObjectCreated:Nope"]}]}),
                "not supported",
            ),
            (
                json!({"configurations": [{"id": "1", "events": ["s3:ObjectCreated:*"], "prefix": ""}]}),
                "filter value cannot be empty",
            ),
            (
                json!({"configurations": [{"id": "1", "events": ["s3:ObjectCreated:*"]}, {"id": "1", "events": ["s3:ObjectRemoved:*"]}]}),
                "given twice",
            ),
            (
                json!({"configurations": [{"id": "1", "events": ["s3:ObjectCreated:*"]}, {"id": "2", "events": ["s3:ObjectCreated:Put"]}]}),
                "overlapping",
            ),
            (json!({"configs": []}), "unknown field"),
        ] {
            let (status, v) = signed_json(&s, "PUT", fn_path, &bad);
            assert_eq!(status, 400, "{bad}: {v}");
            assert!(v["message"].as_str().unwrap().contains(why), "{bad}: {v}");
        }
        let (_, v) = signed_json(&s, "GET", "/v1/buckets/pics/notifications", &Value::Null);
        assert_eq!(
            v["functions"].as_array().unwrap().len(),
            1,
            "refused changes change nothing: {v}"
        );
        // Policies: s3:PutBucketNotification on the bucket's ARN.
        let key = s.create_key(
            "creator",
            json!({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": ["s3:CreateBucket", "s3:GetBucketNotification"], "Resource": "arn:aws:s3:::pics"}]}),
        );
        let r = s.signed("PUT", fn_path, entry.to_string().as_bytes(), &key);
        assert_eq!(r.status().as_u16(), 403);
        let r = s.signed("GET", "/v1/buckets/pics/notifications", b"", &key);
        assert_eq!(r.status().as_u16(), 200);
        let r = s.signed("PUT", "/v1/buckets/other", b"", &key);
        assert_eq!(r.status().as_u16(), 403);
    }

    #[test]
    fn without_the_s3_listener_deploy_says_how_to_turn_it_on() {
        let s = Server::start(&[]);
        let (status, v) = s.get_json("/v1/buckets");
        assert_eq!(status, 503, "{v}");
        assert!(
            v["message"].as_str().unwrap().contains("--s3-listen"),
            "{v}"
        );
        let project = tempfile::tempdir().unwrap();
        write_project(project.path(), true);
        let out = s.cli(&["deploy", project.path().to_str().unwrap()]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("cannot apply the S3 triggers of thumbs"),
            "{err}"
        );
        assert!(
            err.contains("--s3-listen") && err.contains("nimbus up"),
            "{err}"
        );
        // A manifest without triggers deploys as before.
        write_project(project.path(), false);
        cli_ok(&s.cli(&["deploy", project.path().to_str().unwrap()])).unwrap();
    }
}
