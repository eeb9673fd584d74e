"""Step Functions conformance suite (issue 17): table-driven cases run through the real API.

Every case in tests/flows-conformance/cases/*.json is a state machine definition, an input and
the expected outcome, written from the AWS Step Functions documentation (each case cites its
page in `source`). Each case creates a STANDARD state machine with boto3's `stepfunctions`
client against the session's `nimbus serve`, starts one execution, polls DescribeExecution until
it leaves RUNNING and compares status, output, error and cause. Task states call the fixture
functions of tests/flows-conformance/functions, deployed once per session with the Lambda API.
The case format is described in tests/flows-conformance/README.md.

The `test_case_file_*` and `test_fixture_*` tests need no server: they check that every case is
well formed (fields, unique names, known fixtures, transitions that resolve, short waits and
timeouts) and that the fixture functions behave as the cases assume.

Run: python3 -m pytest tests/python/test_flows_conformance.py -q
"""

import importlib.util
import json
import re
import time
from pathlib import Path

import boto3
import botocore
import pytest
from botocore.config import Config

from conftest import (
    ACCESS_KEY,
    ACCOUNT,
    REGION,
    REPO_ROOT,
    ROLE,
    SECRET_KEY,
    error_code,
    make_client,
    unique_name,
    zip_bytes,
)

SUITE = REPO_ROOT / "tests" / "flows-conformance"
CASES_DIR = SUITE / "cases"
FUNCTIONS_DIR = SUITE / "functions"
FN_REF = re.compile(r"\$\{fn:([A-Za-z0-9_-]+)\}")
NAME_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
SOURCE_PREFIXES = ("https://docs.aws.amazon.com/step-functions/", "https://states-language.net/")
EXECUTION_TIMEOUT = 60.0
MAX_WAIT_SECONDS = 1
MAX_TASK_TIMEOUT = 3
EXPECT_KEYS = {"status", "output", "output_matches", "error", "cause", "cause_contains",
               "invalid_definition", "message_contains"}
STATE_TYPES = {"Task", "Pass", "Choice", "Wait", "Succeed", "Fail", "Parallel", "Map"}


# --------------------------------------------------------------------------------------------
# Loading the cases (at import time, so pytest can parametrise without a server)
# --------------------------------------------------------------------------------------------

def load_case_files():
    """[(file stem, [case, …])] for every cases/*.json, sorted by file name."""
    files = []
    for path in sorted(CASES_DIR.glob("*.json")):
        with open(path, encoding="utf-8") as f:
            files.append((path.stem, json.load(f)))
    return files


CASE_FILES = load_case_files()
ALL_CASES = [(stem, case) for stem, cases in CASE_FILES for case in cases]
FIXTURES = sorted(p.name for p in FUNCTIONS_DIR.iterdir() if (p / "app.py").is_file())


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def sfn_client(endpoint_url: str):
    """A boto3 Step Functions client for Nimbus, configured like conftest's make_client:
    dummy credentials, us-east-1, no retries."""
    session = boto3.session.Session(
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION)
    return session.client(
        "stepfunctions",
        endpoint_url=endpoint_url,
        config=Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
        ),
    )


def function_arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"


def definition_text(case, arns) -> str:
    """The case's definition as text with every `${fn:NAME}` replaced by the deployed ARN.
    A string definition is used verbatim (it is how the cases spell invalid JSON)."""
    raw = case["definition"]
    text = raw if isinstance(raw, str) else json.dumps(raw)
    return FN_REF.sub(lambda m: arns[m.group(1)], text)


def select(value, key: str):
    """The part of `value` a small path names: `$` (everything), `a.b`, `a[0].b`, `[1]`."""
    if key == "$":
        return value
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", key):
        if part.startswith("["):
            value = value[int(part[1:-1])]
        else:
            value = value[part]
    return value


def as_text(value) -> str:
    """Strings as they are, everything else as compact JSON (for regular-expression checks)."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def wait_for_execution(sfn, arn: str):
    deadline = time.monotonic() + EXECUTION_TIMEOUT
    while True:
        desc = sfn.describe_execution(executionArn=arn)
        if desc["status"] != "RUNNING":
            return desc
        if time.monotonic() > deadline:
            pytest.fail(f"execution still RUNNING after {EXECUTION_TIMEOUT:.0f} s: {desc}")
        time.sleep(0.1)


def check_outcome(case, desc):
    """Compares a finished execution with the case's expectation; returns a list of problems."""
    expect = case["expect"]
    problems = []
    if desc["status"] != expect["status"]:
        problems.append(f"status {desc['status']!r} (error={desc.get('error')!r}, "
                        f"cause={desc.get('cause')!r}), expected {expect['status']!r}")
        return problems
    if "output" in expect or "output_matches" in expect:
        try:
            output = json.loads(desc.get("output", "null"))
        except ValueError:
            return [f"output is not JSON: {desc.get('output')!r}"]
        if "output" in expect and output != expect["output"]:
            problems.append(f"output {json.dumps(output)}, expected {json.dumps(expect['output'])}")
        for key, pattern in expect.get("output_matches", {}).items():
            try:
                got = select(output, key)
            except (KeyError, IndexError, TypeError):
                problems.append(f"output has no {key!r}: {json.dumps(output)}")
                continue
            if not re.search(pattern, as_text(got)):
                problems.append(f"output {key!r} = {as_text(got)!r} does not match /{pattern}/")
    if "error" in expect and desc.get("error") != expect["error"]:
        problems.append(f"error {desc.get('error')!r}, expected {expect['error']!r} "
                        f"(cause {desc.get('cause')!r})")
    if "cause" in expect and desc.get("cause") != expect["cause"]:
        problems.append(f"cause {desc.get('cause')!r}, expected {expect['cause']!r}")
    if "cause_contains" in expect and expect["cause_contains"] not in (desc.get("cause") or ""):
        problems.append(f"cause {desc.get('cause')!r} does not contain {expect['cause_contains']!r}")
    return problems


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def sfn(nimbus):
    return sfn_client(nimbus.base_url)


@pytest.fixture(scope="session")
def conformance_functions(nimbus):
    """Deploys every fixture function once (python3.11, `app.handler`, unique names); returns
    {fixture name: function ARN}. Deleted when the session ends."""
    lam = make_client(nimbus.base_url)
    deployed = {}
    try:
        for fixture in FIXTURES:
            name = unique_name(f"conf-{fixture}")
            source = (FUNCTIONS_DIR / fixture / "app.py").read_text(encoding="utf-8")
            lam.create_function(
                FunctionName=name, Runtime="python3.11", Role=ROLE, Handler="app.handler",
                Code={"ZipFile": zip_bytes({"app.py": source})}, Timeout=10,
                Description=f"flows conformance fixture {fixture}")
            deployed[fixture] = name
        deadline = time.monotonic() + 60
        for name in deployed.values():
            while lam.get_function_configuration(FunctionName=name).get("State") == "Pending":
                if time.monotonic() > deadline:
                    pytest.fail(f"function {name} still Pending after 60 s")
                time.sleep(0.1)
        yield {fixture: function_arn(name) for fixture, name in deployed.items()}
    finally:
        for name in deployed.values():
            try:
                lam.delete_function(FunctionName=name)
            except botocore.exceptions.ClientError:
                pass


# --------------------------------------------------------------------------------------------
# The conformance cases, through the API
# --------------------------------------------------------------------------------------------

def test_fixture_functions_through_lambda(nimbus, conformance_functions):
    """The deployed fixtures behave as the cases assume when invoked directly (so a failing
    case points at the workflow engine, not at the runtime): results, and a raised
    exception's class name as the error type."""
    lam = make_client(nimbus.base_url)

    def invoke(fixture, event):
        resp = lam.invoke(FunctionName=conformance_functions[fixture], Payload=json.dumps(event))
        return resp.get("FunctionError"), json.loads(resp["Payload"].read())

    assert invoke("echo", {"a": [1]}) == (None, {"a": [1]})
    assert invoke("hello", {"who": "Nimbus"}) == (None, "Hello, Nimbus!")
    assert invoke("add", [3, 2]) == (None, 5)
    function_error, payload = invoke("fail", {"errorType": "OrderError", "message": "bad order"})
    assert function_error, payload
    assert payload["errorType"] == "OrderError" and payload["errorMessage"] == "bad order", payload
    function_error, payload = invoke("flaky", {"failures": 1, "attempt": 0})
    assert function_error and payload["errorType"] == "TransientError", payload
    assert invoke("flaky", {"failures": 1, "attempt": 1}) == (None, {"attempt": 1, "succeeded": True})


@pytest.mark.parametrize(
    "stem,case", ALL_CASES, ids=[case["name"] for _, case in ALL_CASES])
def test_conformance(stem, case, sfn, conformance_functions):
    definition = definition_text(case, conformance_functions)
    machine_name = unique_name("conf")
    expect = case["expect"]
    if expect.get("invalid_definition"):
        with pytest.raises(botocore.exceptions.ClientError) as exc:
            created = sfn.create_state_machine(
                name=machine_name, definition=definition, roleArn=ROLE, type="STANDARD")
            sfn.delete_state_machine(stateMachineArn=created["stateMachineArn"])
        assert error_code(exc.value) == "InvalidDefinition", exc.value.response
        if "message_contains" in expect:
            message = exc.value.response["Error"].get("Message", "")
            assert expect["message_contains"] in message, (
                f"InvalidDefinition message {message!r} does not name {expect['message_contains']!r}")
        return

    created = sfn.create_state_machine(
        name=machine_name, definition=definition, roleArn=ROLE, type="STANDARD")
    arn = created["stateMachineArn"]
    try:
        started = sfn.start_execution(
            stateMachineArn=arn, name=unique_name("exec"), input=json.dumps(case.get("input", {})))
        desc = wait_for_execution(sfn, started["executionArn"])
        problems = check_outcome(case, desc)
        assert not problems, f"{stem}.json :: {case['name']} ({case['source']}):\n  " + "\n  ".join(problems)
    finally:
        try:
            sfn.delete_state_machine(stateMachineArn=arn)
        except botocore.exceptions.ClientError:
            pass


# --------------------------------------------------------------------------------------------
# The case files themselves (no server needed)
# --------------------------------------------------------------------------------------------

def walk_machines(machine, at="$"):
    """Yields (location, machine) for a machine and every nested Parallel branch and Map
    ItemProcessor/Iterator."""
    yield at, machine
    for name, state in (machine.get("States") or {}).items():
        if not isinstance(state, dict):
            continue
        for i, branch in enumerate(state.get("Branches") or []):
            yield from walk_machines(branch, f"{at}.{name}.Branches[{i}]")
        for field in ("ItemProcessor", "Iterator"):
            if isinstance(state.get(field), dict):
                yield from walk_machines(state[field], f"{at}.{name}.{field}")


def structural_problems(definition):
    """Problems a valid definition must not have, by the States Language's own rules: states
    and StartAt present, state names unique in the whole machine, known types, every Next/Default/Catch target in the same scope,
    non-terminal states with Next or End, Choice rules with Next, short Waits and Task timeouts."""
    problems = []
    seen_names = {}
    for at, machine in walk_machines(definition):
        states = machine.get("States")
        if not isinstance(states, dict) or not states:
            problems.append(f"{at}: no States")
            continue
        for name in states:
            if name in seen_names:
                problems.append(f"{at}.{name}: state name also used at {seen_names[name]} "
                                "(names are unique in the whole machine)")
            seen_names.setdefault(name, at)
        if machine.get("StartAt") not in states:
            problems.append(f"{at}: StartAt {machine.get('StartAt')!r} names no state")
        for name, state in states.items():
            where = f"{at}.{name}"
            kind = state.get("Type")
            if kind not in STATE_TYPES:
                problems.append(f"{where}: unknown Type {kind!r}")
                continue
            targets = []
            if kind == "Choice":
                for rule in state.get("Choices") or []:
                    if "Next" not in rule:
                        problems.append(f"{where}: a top-level Choice rule lacks Next")
                    targets.append(rule.get("Next"))
                if "Default" in state:
                    targets.append(state["Default"])
            elif kind not in ("Succeed", "Fail"):
                if ("Next" in state) == bool(state.get("End")):
                    problems.append(f"{where}: needs exactly one of Next or End: true")
                if "Next" in state:
                    targets.append(state["Next"])
            for catcher in state.get("Catch") or []:
                targets.append(catcher.get("Next"))
            for target in targets:
                if target not in states:
                    problems.append(f"{where}: transition to {target!r}, not a state of this scope")
            if kind == "Wait" and isinstance(state.get("Seconds"), (int, float)) \
                    and state["Seconds"] > MAX_WAIT_SECONDS:
                problems.append(f"{where}: Wait {state['Seconds']} s (keep Waits ≤ {MAX_WAIT_SECONDS} s)")
            if kind == "Task" and isinstance(state.get("TimeoutSeconds"), (int, float)) \
                    and state["TimeoutSeconds"] > MAX_TASK_TIMEOUT:
                problems.append(f"{where}: TimeoutSeconds {state['TimeoutSeconds']} (keep ≤ {MAX_TASK_TIMEOUT})")
    return problems


def test_case_files_exist():
    assert CASE_FILES, f"no case files under {CASES_DIR}"
    assert all(cases for _, cases in CASE_FILES), "a case file is empty"


def test_case_file_names_unique_and_kebab():
    seen = {}
    for stem, case in ALL_CASES:
        name = case.get("name")
        assert isinstance(name, str) and NAME_RE.match(name), f"{stem}.json: bad name {name!r}"
        assert name not in seen, f"case {name!r} in {stem}.json and {seen[name]}.json"
        seen[name] = stem


@pytest.mark.parametrize("stem,case", ALL_CASES, ids=[case["name"] for _, case in ALL_CASES])
def test_case_file_well_formed(stem, case):
    where = f"{stem}.json :: {case.get('name')}"
    allowed = {"name", "source", "comment", "definition", "input", "expect"}
    assert set(case) <= allowed, f"{where}: unknown fields {set(case) - allowed}"
    for field in ("name", "source", "definition", "expect"):
        assert field in case, f"{where}: missing {field!r}"
    assert case["source"].startswith(SOURCE_PREFIXES), f"{where}: source {case['source']!r}"
    json.dumps(case.get("input", {}))
    expect = case["expect"]
    assert isinstance(expect, dict) and set(expect) <= EXPECT_KEYS, f"{where}: expect {expect}"

    for ref in FN_REF.findall(json.dumps(case["definition"])):
        assert ref in FIXTURES, f"{where}: ${{fn:{ref}}} names no fixture in {FUNCTIONS_DIR}"

    if expect.get("invalid_definition"):
        assert expect["invalid_definition"] is True
        assert set(expect) <= {"invalid_definition", "message_contains"}, f"{where}: {expect}"
        assert isinstance(case["definition"], (dict, str))
        return

    assert "message_contains" not in expect, f"{where}: message_contains without invalid_definition"
    assert isinstance(case["definition"], dict), f"{where}: a runnable definition is a JSON object"
    assert expect.get("status") in ("SUCCEEDED", "FAILED"), f"{where}: status {expect.get('status')!r}"
    if expect["status"] == "SUCCEEDED":
        assert not {"error", "cause", "cause_contains"} & set(expect), f"{where}: error fields on success"
    else:
        assert not {"output", "output_matches"} & set(expect), f"{where}: output on failure"
    for pattern in expect.get("output_matches", {}).values():
        re.compile(pattern)
    problems = structural_problems(case["definition"])
    assert not problems, f"{where}:\n  " + "\n  ".join(problems)


def test_select_paths():
    doc = {"a": {"b": [1, {"c": "x"}]}, "d": 2}
    assert select(doc, "$") == doc
    assert select(doc, "d") == 2
    assert select(doc, "a.b[1].c") == "x"
    assert select([5, 6], "[1]") == 6


def test_check_outcome_reports_mismatches():
    case = {"expect": {"status": "SUCCEEDED", "output": {"a": 1}, "output_matches": {"id": "^x-\\d+$"}}}
    assert check_outcome(case, {"status": "SUCCEEDED", "output": '{"a": 1}'}) != []
    assert check_outcome({"expect": {"status": "SUCCEEDED", "output": {"a": 1}}},
                         {"status": "SUCCEEDED", "output": '{"a":1}'}) == []
    assert check_outcome({"expect": {"status": "SUCCEEDED", "output_matches": {"id": "^x-\\d+$"}}},
                         {"status": "SUCCEEDED", "output": '{"id": "x-12"}'}) == []
    failed = {"expect": {"status": "FAILED", "error": "E", "cause_contains": "boom"}}
    assert check_outcome(failed, {"status": "FAILED", "error": "E", "cause": "a boom"}) == []
    assert check_outcome(failed, {"status": "FAILED", "error": "F", "cause": "a boom"}) != []
    assert check_outcome(failed, {"status": "SUCCEEDED", "output": "{}"}) != []


# --------------------------------------------------------------------------------------------
# The fixture functions, run in-process (no server needed)
# --------------------------------------------------------------------------------------------

def load_fixture(name):
    spec = importlib.util.spec_from_file_location(f"conformance_fixture_{name}",
                                                  FUNCTIONS_DIR / name / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler


def test_fixture_echo_hello_add_subtract():
    assert load_fixture("echo")({"a": [1]}, None) == {"a": [1]}
    assert load_fixture("hello")({"who": "AWS Step Functions"}, None) == "Hello, AWS Step Functions!"
    assert load_fixture("add")([3, 2], None) == 5
    assert load_fixture("add")({"a": 3, "b": 4}, None) == 7
    assert load_fixture("subtract")([3, 2], None) == 1
    assert load_fixture("sleep")({"seconds": 0, "x": 1}, None) == {"seconds": 0, "x": 1}


def test_fixture_fail_raises_named_error():
    handler = load_fixture("fail")
    with pytest.raises(Exception) as exc:
        handler({"errorType": "OrderError", "message": "bad order"}, None)
    assert type(exc.value).__name__ == "OrderError" and str(exc.value) == "bad order"
    with pytest.raises(Exception) as exc:
        handler({}, None)
    assert type(exc.value).__name__ == "CustomError" and str(exc.value) == "failed"


def test_fixture_flaky_fails_until_attempt_reaches_failures():
    handler = load_fixture("flaky")
    for attempt in (0, 1):
        with pytest.raises(Exception) as exc:
            handler({"failures": 2, "attempt": attempt}, None)
        assert type(exc.value).__name__ == "TransientError"
    assert handler({"failures": 2, "attempt": 2}, None) == {"attempt": 2, "succeeded": True}
