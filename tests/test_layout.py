"""One list of each thing: the lists others derive from agree with what the code actually registers."""

from typing import get_args

from simulator.state import VENDORS as SIMULATED_VENDORS
from worker.vendors.base import VendorName, registered_vendors


def test_the_vendor_list_is_the_registry() -> None:
    assert sorted(get_args(VendorName)) == registered_vendors()


def test_the_simulator_simulates_every_vendor() -> None:
    assert sorted(SIMULATED_VENDORS) == sorted(get_args(VendorName))
