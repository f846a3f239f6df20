"""build_config: targets, arch resolution, key validation, nesting and threads."""

import threading

import pytest

import mera


def test_missing_target_is_the_original_error():
    with pytest.raises(ValueError) as e:
        mera.build_config(arch=100)
    assert str(e.value) == "target is not provided"
    assert isinstance(e.value, mera.ConfigError)


def test_targets():
    assert [t.value for t in mera.Target] == ["IP", "Interpreter", "InterpreterHw", "Simulator"]
    for t in mera.Target:
        assert mera.build_config(target=t.value).target is t
        assert mera.build_config(target=t).target is t
    with pytest.raises(mera.ConfigError, match="unknown target 'Sim'; valid targets: IP, Interpreter"):
        mera.build_config(target="Sim")


@pytest.mark.parametrize("arch, name", [
    (100, "DNAF100L0003"), (200, "DNAF200L0003"), ("100", "DNAF100L0003"),
    ("DNAF632L0003", "DNAF632L0003"), ("SAKURA_1", "DNAA600L0002"), ("DNAA600L0002", "DNAA600L0002"),
])
def test_arch_values(arch, name):
    cfg = mera.build_config(target="IP", arch=arch)
    assert cfg.arch["name"] == name


def test_arch_enum_table_and_default():
    assert mera.Platform.SAKURA_1.value == "DNAA600L0002"
    cfg = mera.build_config(target="IP", arch=mera.Platform.DNAF200L0003)
    assert cfg.arch["mac_count"] == 8192 and cfg.arch["clock_mhz"] == 300
    assert mera.build_config(target="IP").arch["name"] == "DNAF200L0002"  # MERA's default
    f100 = mera.build_config(target="IP", arch=100).arch
    assert f100["tops"] == 2.4 and f100["mac_count"] == 4096 and f100["kind"] == "FPGA"
    for p in mera.platforms():  # the MAC array matches the published TOPS within rounding
        implied = 2 * p["mac_count"] * p["clock_mhz"] * 1e6 / 1e12
        assert abs(implied - p["tops"]) / p["tops"] < 0.05, p["name"]
        assert {"act_buffer_kib", "dram_gbps", "vector_lanes"} <= set(p)
    assert {p["name"] for p in mera.platforms()} >= {"DNAF100L0003", "DNAF200L0003", "DNAA600L0002",
                                                      "DNAA400L0001", "DNAF132S0001", "DNAF232S0002",
                                                      "DNAF632L0003", "DNAA800L0001"}


def test_arch_dict_overrides():
    cfg = mera.build_config(target="Simulator", arch={"platform": 100, "clock_mhz": 250})
    assert cfg.arch["name"] == "DNAF100L0003"
    assert cfg.arch["clock_mhz"] == 250
    assert cfg.arch["tops"] == pytest.approx(2 * 4096 * 250e6 / 1e12)
    assert cfg.arch["overridden"] == ["clock_mhz"]
    with pytest.raises(mera.ConfigError, match="arch: unknown key\\(s\\) 'buffer_kb'; valid keys: platform, clock_mhz"):
        mera.build_config(target="IP", arch={"platform": 100, "buffer_kb": 1})
    cfg = mera.build_config(target="IP", arch={"platform": 200, "mac_px": 1, "dram_gbps": 10})
    assert cfg.arch["mac_count"] == 4096 and cfg.arch["dram_gbps"] == 10.0
    with pytest.raises(mera.ConfigError, match="'mac_ic' \\(lanes\\) must be a positive int, got 2.5"):
        mera.build_config(target="IP", arch={"platform": 100, "mac_ic": 2.5})
    with pytest.raises(mera.ConfigError, match="needs 'platform'"):
        mera.build_config(target="IP", arch={"clock_mhz": 250})
    with pytest.raises(mera.ConfigError, match="'clock_mhz' \\(MHz\\) must be a positive number"):
        mera.build_config(target="IP", arch={"platform": 100, "clock_mhz": -1})


def test_unknown_arch_lists_platforms():
    with pytest.raises(mera.ConfigError) as e:
        mera.build_config(target="IP", arch=300)
    assert "unknown platform 300" in str(e.value)
    assert "DNAF100L0003 (100)" in str(e.value) and "DNAA600L0002 (SAKURA_1)" in str(e.value)


def test_unknown_keys_are_errors_listing_valid_keys():
    with pytest.raises(mera.ConfigError) as e:
        mera.build_config(target="IP", compiler_worker=4)
    msg = str(e.value)
    assert "unknown key(s) 'compiler_worker'" in msg
    assert "valid keys: target, arch, max_tile_height" in msg and "compiler_workers" in msg
    with pytest.raises(mera.ConfigError, match="unknown scheduler_config key\\(s\\) 'mod'"):
        mera.build_config(target="IP", scheduler_config={"mod": "Slow"})
    with pytest.raises(mera.ConfigError, match="must be \"Fast\" or \"Slow\""):
        mera.build_config(target="IP", scheduler_config={"mode": "slow"})
    with pytest.raises(mera.ConfigError, match="'max_tile_height' must be a positive int"):
        mera.build_config(target="IP", max_tile_height=0)


def test_mera_recommended_config_is_accepted():
    cfg = mera.build_config(target="IP", arch=100, compiler_workers=4, scheduler_config={"mode": "Slow"},
                            dump_ir="true", use_small_acc_mem="false")
    assert cfg["compiler_workers"] == 4
    assert cfg["scheduler_config"] == {"mode": "Slow"}
    assert cfg["dump_ir"] is True and cfg["use_small_acc_mem"] is False
    assert cfg["max_tile_height"] == 64  # MERA's default


def test_nesting_restores_outer_config():
    assert mera.current_build_config() is None
    with mera.build_config(target="IP", arch=100) as outer:
        assert mera.current_build_config() is outer
        with mera.build_config(target="InterpreterHw") as inner:
            assert mera.current_build_config() is inner
            with outer:  # re-entering the same object nests too
                assert mera.current_build_config() is outer
            assert mera.current_build_config() is inner
        assert mera.current_build_config() is outer
    assert mera.current_build_config() is None


def test_error_inside_block_restores_config():
    with pytest.raises(RuntimeError):
        with mera.build_config(target="IP"):
            raise RuntimeError("boom")
    assert mera.current_build_config() is None


def test_threads_see_their_own_config():
    barrier = threading.Barrier(8)
    shared = mera.build_config(target="Simulator", arch=200)
    seen, errors = {}, []

    def work(i):
        try:
            target = ["IP", "Interpreter", "InterpreterHw", "Simulator"][i % 4]
            with mera.build_config(target=target, arch=100 if i % 2 else 200):
                barrier.wait()
                with shared:
                    barrier.wait()
                    assert mera.current_build_config() is shared
                seen[i] = (mera.current_build_config().target.value, mera.current_build_config().arch["arch"])
            assert mera.current_build_config() is None
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(8):
        assert seen[i] == (["IP", "Interpreter", "InterpreterHw", "Simulator"][i % 4], 100 if i % 2 else 200)
    assert mera.current_build_config() is None
