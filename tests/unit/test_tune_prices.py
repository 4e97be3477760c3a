"""The shipped price table, overrides, extra files, purchase factors and the CPU-set mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelfleet.config.tune import HardwareSpec, PriceSpec
from modelfleet.errors import InvalidInput, SpecError
from modelfleet.tune.prices import SHIPPED_TABLE, load_prices, map_hardware, read_table


def test_shipped_table_is_dated_and_covers_the_families() -> None:
    table = read_table(SHIPPED_TABLE)
    assert table.as_of and table.region == "us-east-1"
    families = {table.family_of(name) for name in table.instances}
    assert {"c5", "c6i", "c7i", "c7g", "m5", "m7i", "g4dn", "g5", "g6", "inf2"} <= families
    assert table.instances["c7g.large"].arch == "arm64"
    assert table.instances["g5.xlarge"].accelerators == 1
    assert "check before relying" in SHIPPED_TABLE.read_text()


def test_overrides_extra_files_and_purchase_factors(tmp_path: Path) -> None:
    extra = tmp_path / "mine.yaml"
    extra.write_text(
        "provider: onprem\nregion: rack-1\nas_of: '2026-01'\n"
        "instances:\n  box.small: {vcpu: 2, memory_gib: 8, price_per_h: 0.05}\n"
    )
    prices = load_prices(PriceSpec(extra_files=[extra], overrides={"c7i.large": 0.07}))
    assert prices.price_per_h("box.small") == pytest.approx(0.05)
    assert prices.price_per_h("c7i.large") == pytest.approx(0.07)
    spot = load_prices(PriceSpec(purchase="spot"))
    assert spot.price_per_h("c7i.large") == pytest.approx(0.08925 * spot.table.spot_factor)
    reserved = load_prices(PriceSpec(purchase="reserved"))
    assert reserved.price_per_h("c7i.large") == pytest.approx(0.08925 * reserved.table.reserved_factor)


def test_unknown_instance_type_names_the_setting_and_suggests() -> None:
    with pytest.raises(
        InvalidInput, match=r"unknown instance type 'c7i.larg' \(prices.overrides.c7i.larg\).*c7i.large"
    ):
        load_prices(PriceSpec(overrides={"c7i.larg": 0.1}))
    prices = load_prices(PriceSpec())
    with pytest.raises(InvalidInput, match=r"hardware.0.instance_type"):
        map_hardware(HardwareSpec(cpus=2, instance_type="z9.huge"), prices, [], "hardware.0")


def test_bad_price_file_is_a_spec_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "provider: x\nregion: y\nas_of: z\ninstances:\n  a.b: {vcpu: 0, memory_gib: 1, price_per_h: 1}\n"
    )
    with pytest.raises(SpecError, match=r"instances.a.b.vcpu"):
        load_prices(PriceSpec(extra_files=[bad]))


def test_cpu_set_maps_to_the_cheapest_fitting_type() -> None:
    prices = load_prices(PriceSpec())
    one = map_hardware(HardwareSpec(cpus=2), prices, ["c7i", "m7i"], "hardware.0")
    assert one.instance_type == "c7i.large" and "cheapest in c7i/m7i" in one.how
    roomy = map_hardware(HardwareSpec(cpus=2, memory_mib=6000), prices, ["c7i", "m7i"], "hardware.0")
    assert roomy.instance_type == "m7i.large"  # c7i.large has only 4 GiB
    given = map_hardware(HardwareSpec(cpus=2, instance_type="c6i.xlarge"), prices, [], "hardware.0")
    assert given.instance_type == "c6i.xlarge" and given.how == "given"
    with pytest.raises(InvalidInput, match="no instance type"):
        map_hardware(HardwareSpec(cpus=512), prices, ["c7i"], "hardware.0")
