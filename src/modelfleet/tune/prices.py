"""Price tables: instance types with vCPUs, memory, accelerators and $ per hour; a CPU set mapped to one.

The shipped table (`prices/aws-2026-12.yaml`) holds AWS list prices; users replace figures with
`prices.overrides`, add or replace types with `prices.extra_files`, and pick on-demand, spot or reserved.
"""

from __future__ import annotations

import difflib
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelfleet.config.base import format_validation_error
from modelfleet.config.tune import HardwareSpec, PriceSpec
from modelfleet.errors import InvalidInput, SpecError
from modelfleet.yamlio import read_yaml_mapping

SHIPPED_TABLE = Path(__file__).with_name("prices") / "aws-2026-12.yaml"


class InstanceType(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vcpu: int = Field(ge=1, description="Virtual CPUs.")
    memory_gib: float = Field(gt=0, description="Memory in GiB.")
    price_per_h: float = Field(gt=0, description="On-demand $ per hour.")
    arch: Literal["x86_64", "arm64"] = Field(default="x86_64", description="CPU architecture.")
    accelerator: str | None = Field(default=None, description="Accelerator model, e.g. nvidia-t4.")
    accelerators: int = Field(default=0, ge=0, description="Accelerators per instance.")

    @property
    def memory_mib(self) -> int:
        return int(self.memory_gib * 1024)


class PriceTable(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: str = Field(description="Cloud provider, e.g. aws.")
    region: str = Field(description="Region the prices are for.")
    currency: str = Field(default="USD", description="Currency of every price.")
    as_of: str = Field(description="When the prices were read (YYYY-MM).")
    spot_factor: float = Field(default=0.35, gt=0, le=1, description="Spot price ÷ on-demand price.")
    reserved_factor: float = Field(default=0.62, gt=0, le=1, description="Reserved price ÷ on-demand.")
    instances: dict[str, InstanceType] = Field(description="Instance type name → its figures.")

    def family_of(self, name: str) -> str:
        return name.split(".", 1)[0]


def read_table(path: Path) -> PriceTable:
    data = read_yaml_mapping(path, what="price table")
    try:
        return PriceTable.model_validate(data)
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, str(path))) from None


@dataclass(frozen=True, slots=True)
class Prices:
    """The merged table with the purchase option applied: what `price_per_h` answers."""

    table: PriceTable
    purchase: str
    sources: tuple[str, ...]

    def factor(self) -> float:
        if self.purchase == "spot":
            return self.table.spot_factor
        if self.purchase == "reserved":
            return self.table.reserved_factor
        return 1.0

    def instance(self, name: str, where: str = "instance type") -> InstanceType:
        found = self.table.instances.get(name)
        if found is None:
            close = difflib.get_close_matches(name, list(self.table.instances), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise InvalidInput(
                f"unknown instance type {name!r} ({where}): not in the price table "
                f"({', '.join(self.sources)}){hint} Add it with prices.extra_files or prices.overrides"
            )
        return found

    def price_per_h(self, name: str) -> float:
        return self.instance(name).price_per_h * self.factor()


def load_prices(spec: PriceSpec) -> Prices:
    """The shipped (or given) table, extra files over it, then overrides; unknown override names fail."""
    path = spec.table or SHIPPED_TABLE
    table = read_table(path)
    sources = [path.name]
    instances = dict(table.instances)
    for extra in spec.extra_files:
        instances.update(read_table(extra).instances)
        sources.append(extra.name)
    prices = Prices(table.model_copy(update={"instances": instances}), spec.purchase, tuple(sources))
    for name, price in spec.overrides.items():
        instances[name] = prices.instance(name, f"prices.overrides.{name}").model_copy(
            update={"price_per_h": price}
        )
    return prices


def machine_arch() -> str:
    machine = platform.machine().lower()
    return "arm64" if machine in ("aarch64", "arm64") else "x86_64"


@dataclass(frozen=True, slots=True)
class HardwareMapping:
    """A local CPU set priced as (a share of) an instance type."""

    label: str
    cpus: int
    memory_mib: int | None
    instance_type: str
    instance: InstanceType
    how: str  # why this type: "given" or "cheapest c7i/... with >= N vCPU and >= M MiB"


def map_hardware(
    hardware: HardwareSpec, prices: Prices, families: Sequence[str], where: str
) -> HardwareMapping:
    """The instance type a CPU set stands for: the one named, else the cheapest that fits it."""
    if hardware.instance_type is not None:
        instance = prices.instance(hardware.instance_type, f"{where}.instance_type")
        return HardwareMapping(
            hardware.label, hardware.cpus, hardware.memory_mib, hardware.instance_type, instance, "given"
        )
    arch = machine_arch()
    allowed = set(families)
    candidates = [
        (item.price_per_h, name, item)
        for name, item in prices.table.instances.items()
        if (
            prices.table.family_of(name) in allowed
            if allowed
            else item.arch == arch and not item.accelerators
        )
        and item.vcpu >= hardware.cpus
        and (hardware.memory_mib is None or item.memory_mib >= hardware.memory_mib)
    ]
    if not candidates:
        scope = f"families {', '.join(families)}" if families else f"{arch} CPU families"
        raise InvalidInput(
            f"no instance type in {scope} has {hardware.cpus} vCPUs and {hardware.memory_mib or 0} MiB "
            f"({where}); name one with instance_type or widen prices.families"
        )
    _, name, item = min(candidates, key=lambda c: (c[0], c[1]))
    scope = "/".join(sorted(allowed)) if allowed else f"{arch} CPU families"
    memory = f" and >= {hardware.memory_mib} MiB" if hardware.memory_mib else ""
    return HardwareMapping(
        hardware.label,
        hardware.cpus,
        hardware.memory_mib,
        name,
        item,
        f"cheapest in {scope} with >= {hardware.cpus} vCPU{memory}",
    )
