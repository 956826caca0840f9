import pytest

from cmperf import specs


@pytest.fixture(scope="session")
def cm384():
    return specs.load_system("cloudmatrix384")


@pytest.fixture(scope="session")
def r1():
    return specs.load_model("deepseek-r1")
