"""Vendor simulator: one HTTP server speaking the GeWe, GeWe-legacy, E云管家 and MagicCgi APIs.

It validates requests the way each vendor does, answers with the vendors' real envelopes, records
every accepted send (with exact 64-bit ids) and injects faults on demand, so the worker can be tested
and benchmarked end to end over real HTTP without a real WeChat account.
"""

from simulator.app import create_app
from simulator.server import SimulatorServer, load_accounts, serve
from simulator.state import DEMO_ACCOUNTS, FAULT_KINDS, VENDORS, Fault, SendRecord, SimAccount, SimState

__all__ = [
    "DEMO_ACCOUNTS",
    "FAULT_KINDS",
    "VENDORS",
    "Fault",
    "SendRecord",
    "SimAccount",
    "SimState",
    "SimulatorServer",
    "create_app",
    "load_accounts",
    "serve",
]
