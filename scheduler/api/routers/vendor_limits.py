"""``/v1/vendor-limits``: a vendor API's own rate across all its accounts (documented with accounts)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from scheduler.api.state import AUTH, Stores
from worker.store.scripts import SHARED
from worker.vendors.base import VendorName

MIN_VENDOR_RATE = SHARED["MIN_VENDOR_RATE"]

router = APIRouter(tags=["accounts"], dependencies=AUTH)


class VendorLimitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: strict: ``true`` is not 1 per second (a JSON number, or an integer, only)
    per_second: float = Field(ge=0, le=10_000, strict=True, description=f"0 = none, else at least {MIN_VENDOR_RATE:g}")

    @field_validator("per_second")
    @classmethod
    def _not_too_slow(cls, value: float) -> float:
        # the scripts keep a vendor's recent sends for the longest gap this allows (SHARED in worker/store/scripts.py)
        if 0 < value < MIN_VENDOR_RATE:
            raise ValueError(f"must be 0 (no limit) or at least {MIN_VENDOR_RATE:g} per second")
        return value + 0.0  # -0.0 is 0


@router.put("/v1/vendor-limits/{vendor}")
def put_vendor_limit(vendor: VendorName, body: VendorLimitIn, state: Stores) -> dict[str, Any]:
    """The vendor API's own rate, across all its accounts, on top of each account's pacing (0 = none)."""
    state.accounts.set_vendor_limit(vendor, body.per_second)
    return {"vendor": vendor, "per_second": body.per_second}


@router.get("/v1/vendor-limits")
def get_vendor_limits(state: Stores) -> dict[str, Any]:
    return {"vendor_limits": state.accounts.vendor_limits()}
