"""``jaxdissect demo --no-describe`` skips the open-vocabulary section (on by default)."""

import argparse

from jaxdissect.commands import demo
from jaxdissect.pipeline.config import DemoConfig, from_args


def test_the_demo_describes_unless_told_not_to():
    p = argparse.ArgumentParser()
    demo.add_arguments(p)
    assert from_args(DemoConfig, p.parse_args([])).describe is True
    assert from_args(DemoConfig, p.parse_args(["--no-describe"])).describe is False
