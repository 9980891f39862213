"""Runs on the CD agent after each apply (`envpipe test ENV`), against that environment.

envpipe sets ENVPIPE_ENVIRONMENT, ENVPIPE_VERSION, ENVPIPE_OUTPUTS (a JSON file of the
last apply's outputs, sensitive ones left out) and ENVPIPE_OUTPUT_<NAME> per output.
"""
import json
import os

ENVIRONMENT = os.environ["ENVPIPE_ENVIRONMENT"]
with open(os.environ["ENVPIPE_OUTPUTS"], encoding="utf-8") as handle:
    OUTPUTS = json.load(handle)

EXPECTED_INSTANCES = {"test": 1, "staging": 2, "production": 3}
# On-demand environments and sandboxes (any other name) are like test (on_demand.like).
EXPECTED = EXPECTED_INSTANCES.get(ENVIRONMENT, EXPECTED_INSTANCES["test"])


def test_outputs_describe_this_environment():
    assert OUTPUTS["environment"] == ENVIRONMENT
    assert OUTPUTS["endpoint"] == f"https://our-project-{ENVIRONMENT}.example.com"


def test_applied_version_is_the_version_under_test():
    assert OUTPUTS["version"] == os.environ["ENVPIPE_VERSION"]


def test_instance_count_follows_the_environment_vars():
    assert OUTPUTS["instance_count"] == EXPECTED


def test_each_output_is_also_a_variable():
    assert os.environ["ENVPIPE_OUTPUT_ENDPOINT"] == OUTPUTS["endpoint"]
    assert json.loads(os.environ["ENVPIPE_OUTPUT_INSTANCE_COUNT"]) == OUTPUTS["instance_count"]


def test_sensitive_outputs_are_kept_from_the_tests():
    assert "admin_token" not in OUTPUTS
    assert "ENVPIPE_OUTPUT_ADMIN_TOKEN" not in os.environ
