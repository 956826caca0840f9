import pytest

from cmperf import specs


@pytest.fixture(scope="session")
def cm384():
    return specs.load_system("cloudmatrix384")


@pytest.fixture(scope="session")
def r1():
    return specs.load_model("deepseek-r1")


def ddep(**knobs):
    """A decode Deployment with the defaults the tests were written against (2 microbatches, INT8 W8A8)."""
    from cmperf.deployment import Deployment, Precision

    return Deployment(**{"microbatches": 2, "precision": Precision(), **knobs})


def pdep(**knobs):
    """A prefill Deployment with the defaults the tests were written against (16 devices, INT8 W8A8)."""
    from cmperf.deployment import Deployment, Precision

    return Deployment(**{"phase": "prefill", "devices": 16, "precision": Precision(), **knobs})
