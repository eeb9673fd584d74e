"""boto3 against Nimbus's provisioned concurrency API (Put/Get/List/Delete)."""

import time

import pytest
from botocore.exceptions import ClientError

from conftest import error_code, http_status


def test_put_get_list_delete_provisioned_concurrency(lambda_client, make_function):
    resp = make_function(Publish=True)
    name = resp["FunctionName"]
    lambda_client.create_alias(FunctionName=name, Name="live", FunctionVersion="1")

    put = lambda_client.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=1)
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert put["RequestedProvisionedConcurrentExecutions"] == 1
    assert put["Status"] in ("IN_PROGRESS", "READY")
    assert put["LastModified"]

    deadline = time.time() + 60
    while True:
        got = lambda_client.get_provisioned_concurrency_config(FunctionName=name, Qualifier="live")
        assert got["Status"] != "FAILED", got
        if got["Status"] == "READY":
            break
        assert time.time() < deadline, got
        time.sleep(0.2)
    assert got["AllocatedProvisionedConcurrentExecutions"] == 1
    assert got["AvailableProvisionedConcurrentExecutions"] == 1

    listed = lambda_client.list_provisioned_concurrency_configs(FunctionName=name)
    items = listed["ProvisionedConcurrencyConfigs"]
    assert len(items) == 1
    assert items[0]["FunctionArn"].endswith(f":function:{name}:live")

    lambda_client.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="live")
    with pytest.raises(ClientError) as e:
        lambda_client.get_provisioned_concurrency_config(FunctionName=name, Qualifier="live")
    assert error_code(e.value) == "ProvisionedConcurrencyConfigNotFoundException"
    assert http_status(e.value) == 404
    with pytest.raises(lambda_client.exceptions.ProvisionedConcurrencyConfigNotFoundException):
        lambda_client.get_provisioned_concurrency_config(FunctionName=name, Qualifier="1")


def test_provisioned_concurrency_on_latest_is_refused(lambda_client, make_function):
    name = make_function()["FunctionName"]
    with pytest.raises(lambda_client.exceptions.InvalidParameterValueException):
        lambda_client.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="$LATEST", ProvisionedConcurrentExecutions=1)
