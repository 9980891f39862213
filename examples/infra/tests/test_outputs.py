"""Runs on the CD agent after each apply (`envpipe test ENV`), against that environment.

envpipe sets ENVPIPE_ENVIRONMENT, ENVPIPE_VERSION, ENVPIPE_OUTPUTS (a JSON file of the
last apply's outputs, sensitive ones left out) and ENVPIPE_OUTPUT_<NAME> per output.
"""
import json
import os
import re

ENVIRONMENT = os.environ["ENVPIPE_ENVIRONMENT"]
with open(os.environ["ENVPIPE_OUTPUTS"], encoding="utf-8") as handle:
    OUTPUTS = json.load(handle)

EXPECTED_INSTANCES = {"test": 1, "staging": 2, "production": 3}
# production's blue-green instances (production-blue, production-green) are like it;
# on-demand environments and sandboxes (any other name) are like test (on_demand.like).
PATH_ENVIRONMENT = re.sub(r"-(blue|green)$", "", ENVIRONMENT)
EXPECTED = EXPECTED_INSTANCES.get(PATH_ENVIRONMENT, EXPECTED_INSTANCES["test"])
# The instance the outputs come from: this one, or (testing production itself after
# a blue-green release) its live instance.
INSTANCE = OUTPUTS["environment"]


def test_outputs_describe_this_environment():
    assert INSTANCE == ENVIRONMENT or re.fullmatch(re.escape(ENVIRONMENT) + "-(blue|green)", INSTANCE)
    assert OUTPUTS["endpoint"] == f"https://our-project-{INSTANCE}.example.com"


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
