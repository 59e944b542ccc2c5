"""peer/config.py: precedence flag > env > TOML > default, validation, HOST:PORT parsing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from peer.config import (
    SPECS,
    PeerConfig,
    SettingSpec,
    build_parser,
    default_worker_memory_mb,
    from_args,
    load,
    parse_hostport,
)
from peer.errors import ConfigError


def _toml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "banzai.toml"
    p.write_text(text)
    return p


# -- HOST:PORT ---------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "expect"), [
    ("127.0.0.1:8700", ("127.0.0.1", 8700)),
    ("localhost:0", ("localhost", 0)),
    ("0.0.0.0:65535", ("0.0.0.0", 65535)),
    ("[::1]:0", ("::1", 0)),
    ("[::]:8700", ("::", 8700)),
    ("[fe80::1%eth0]:9", ("fe80::1%eth0", 9)),
])
def test_parse_hostport(value: str, expect: tuple[str, int]) -> None:
    assert parse_hostport(value, "http") == expect


@pytest.mark.parametrize(("value", "words"), [
    ("127.0.0.1", "HOST:PORT"),
    (":8700", "HOST:PORT"),
    ("", "HOST:PORT"),
    ("host:http", "number"),
    ("host:", "number"),
    ("host:65536", "out of range"),
    ("host:-1", "out of range"),
])
def test_parse_hostport_rejects(value: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_hostport(value, "gossip")
    assert e.value.field == "gossip"
    assert words in e.value.message and "gossip" in e.value.message


# -- precedence --------------------------------------------------------------------------
def test_defaults(tmp_path: Path) -> None:
    cfg = load({}, env={})
    assert cfg.http == "127.0.0.1:8700"
    assert cfg.slots == (os.cpu_count() or 1)
    assert cfg.store == "embedded" and cfg.task_timeout_s == 3600.0
    assert cfg.worker_memory_mb == default_worker_memory_mb() >= 2048 and cfg.join == ()
    assert cfg.data_dir.name == "banzai"


def test_toml_then_env_then_flag(tmp_path: Path) -> None:
    path = _toml(tmp_path, 'slots = 7\nhttp = "127.0.0.1:1111"\nlog-level = "DEBUG"\n'
                           'join = ["10.0.0.1:9000", "10.0.0.2:9000"]\n'
                           'task_timeout_s = 12\n')
    cfg = load({}, env={}, toml_path=path)
    assert (cfg.slots, cfg.http, cfg.log_level) == (7, "127.0.0.1:1111", "DEBUG")
    assert cfg.join == ("10.0.0.1:9000", "10.0.0.2:9000") and cfg.task_timeout_s == 12.0
    env = {"BANZAI_SLOTS": "5", "BANZAI_JOIN": "10.0.0.3:1, 10.0.0.4:2"}
    cfg = load({}, env=env, toml_path=path)
    assert cfg.slots == 5 and cfg.http == "127.0.0.1:1111"  # env beats TOML, TOML stays
    assert cfg.join == ("10.0.0.3:1", "10.0.0.4:2")
    cfg = load({"slots": 3, "join": [], "http": None}, env=env, toml_path=path)
    assert cfg.slots == 3  # a flag beats both
    assert cfg.join == ("10.0.0.3:1", "10.0.0.4:2")  # unset flags do not override
    assert cfg.http == "127.0.0.1:1111"


def test_config_file_from_env(tmp_path: Path) -> None:
    path = _toml(tmp_path, "slots = 9\n")
    assert load({}, env={"BANZAI_CONFIG": str(path)}).slots == 9


def test_from_args_reads_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         ) -> None:
    path = _toml(tmp_path, 'slots = 7\nstore = "embedded"\n')
    monkeypatch.setenv("BANZAI_SLOTS", "5")
    monkeypatch.setenv("BANZAI_TASK_TIMEOUT_S", "2.5")
    monkeypatch.setenv("BANZAI_DATA_DIR", str(tmp_path / "env-dir"))
    cfg, _ = from_args(["--config", str(path), "--http", "[::1]:0"])
    assert cfg.slots == 5 and cfg.task_timeout_s == 2.5 and cfg.http_addr == ("::1", 0)
    assert cfg.data_dir == tmp_path / "env-dir"
    cfg, _ = from_args(["--config", str(path), "--slots", "2", "--data-dir", str(tmp_path),
                        "--task-module", "a", "--task-module", "b",
                        "--worker-memory-mb", "1500", "--no-mdns"])
    assert cfg.slots == 2 and cfg.data_dir == tmp_path
    assert cfg.task_modules == ("a", "b") and cfg.worker_memory_mb == 1500
    assert cfg.mdns is False


# -- invalid values name their field -----------------------------------------------------
@pytest.mark.parametrize(("env", "field"), [
    ({"BANZAI_SLOTS": "many"}, "slots"),
    ({"BANZAI_SLOTS": "0"}, "slots"),
    ({"BANZAI_TASK_TIMEOUT_S": "soon"}, "task_timeout_s"),
    ({"BANZAI_TASK_TIMEOUT_S": "-1"}, "task_timeout_s"),
    ({"BANZAI_LEASE_S": "0"}, "lease_s"),
    ({"BANZAI_WORKER_MEMORY_MB": "lots"}, "worker_memory_mb"),
    ({"BANZAI_WORKER_MEMORY_MB": "0"}, "worker_memory_mb"),
    ({"BANZAI_HTTP": "nohost"}, "http"),
    ({"BANZAI_GOSSIP": "h:99999"}, "gossip"),
    ({"BANZAI_JOIN": "a:1,b"}, "join"),
    ({"BANZAI_STORE": "s3"}, "store"),
    ({"BANZAI_STORE": "kubo"}, "ipfs_api"),
    ({"BANZAI_LOG_LEVEL": "LOUD"}, "log_level"),
    ({"BANZAI_MAX_ATTEMPTS": "0"}, "max_attempts"),
    ({"BANZAI_FETCH_ALLOW": "127.0.0.1/32,localhost"}, "fetch_allow"),
    ({"BANZAI_FETCH_ALLOW": "10.0.0.0/33"}, "fetch_allow"),
    ({"BANZAI_LABELS": "site"}, "labels"),
    ({"BANZAI_LABELS": "a b=c"}, "labels"),
    ({"BANZAI_COMPACT_PROVIDER_SETS_MAX": "-1"}, "compact_provider_sets_max"),
    ({"BANZAI_COMPACT_PROVIDER_SETS_MAX": "many"}, "compact_provider_sets_max"),
    ({"BANZAI_COMPACT_READ_BACK_ENTRIES": "0"}, "compact_read_back_entries"),
    ({"BANZAI_MALLOC_TRIM_INTERVAL_S": "-1"}, "malloc_trim_interval_s"),
    ({"BANZAI_MALLOC_TRIM_INTERVAL_S": "nan"}, "malloc_trim_interval_s"),
    ({"BANZAI_MALLOC_TRIM_INTERVAL_S": "often"}, "malloc_trim_interval_s"),
    ({"BANZAI_GC_YOUNG_ALLOCS": "-1"}, "gc_young_allocs"),
    ({"BANZAI_TMPFS_FREE_MIN_MB": "-1"}, "tmpfs_free_min_mb"),
    ({"BANZAI_TMPFS_FREE_MIN_MB": "lots"}, "tmpfs_free_min_mb"),
    ({"BANZAI_TASK_SCRATCH_MAX_GB": "-1"}, "task_scratch_max_gb"),
    ({"BANZAI_TASK_SCRATCH_MAX_GB": "inf"}, "task_scratch_max_gb"),
    ({"BANZAI_TASK_SCRATCH_MAX_GB": "nan"}, "task_scratch_max_gb"),
    ({"BANZAI_STORE_MAX_GB": "inf"}, "store_max_gb"),  # (OverflowError at the start)
    ({"BANZAI_LOG_VACUUM_MIN_FREE_MB": "inf"}, "log_vacuum_min_free_mb"),
    ({"BANZAI_MAX_CLOCK_DRIFT_S": "inf"}, "max_clock_drift_s"),
    ({"BANZAI_COMPACT_HORIZON_DAYS": "inf"}, "compact_horizon_days"),  # (at every pass)
    ({"BANZAI_GC_YOUNG_ALLOCS": "1.5"}, "gc_young_allocs"),
    ({"BANZAI_GC_YOUNG_ALLOCS": "3000000000"}, "gc_young_allocs"),
])
def test_invalid_values_raise_config_error_naming_the_field(env: dict[str, str],
                                                           field: str) -> None:
    with pytest.raises(ConfigError) as e:
        load({}, env=env)
    assert e.value.field == field
    assert field in e.value.message or field.replace("_", "-") in e.value.message


def test_label_flags_map_names_to_values() -> None:
    cfg, _ = from_args(["--label", "site=lab2", "--label", "gpu=a100=x"])
    assert cfg.label_map() == {"site": "lab2", "gpu": "a100=x"}
    assert PeerConfig().label_map() == {}


def test_fetch_allow_flags() -> None:
    cfg, _ = from_args(["--fetch-allow", "127.0.0.1/32", "--fetch-allow", "::1"])
    assert cfg.fetch_allow == ("127.0.0.1/32", "::1")
    assert PeerConfig().fetch_allow == ()  # nothing beyond public addresses by default


def test_a_config_file_that_is_not_utf8_is_a_config_error_naming_it_and_the_byte(
        tmp_path: Path) -> None:
    """Review r1 L1: read_text raised UnicodeDecodeError, a traceback at the start."""
    path = tmp_path / "banzai.toml"
    path.write_bytes(b"slots = 2\n# caf\xe9\n")
    with pytest.raises(ConfigError) as e:
        load({}, env={}, toml_path=path)
    assert e.value.field == "config"
    assert e.value.message.startswith(f"config file {path}: not UTF-8 text (byte 15: b'\\xe9')")


def test_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load({}, env={}, toml_path=_toml(tmp_path, "slots = [\n"))
    assert e.value.field == "config"
    with pytest.raises(ConfigError) as e:
        load({}, env={}, toml_path=_toml(tmp_path, "colour = 'blue'\n"))
    assert e.value.field == "colour" and "unknown setting" in e.value.message
    with pytest.raises(ConfigError) as e:
        load({}, env={}, toml_path=tmp_path / "missing.toml")
    assert e.value.field == "config"
    with pytest.raises(ConfigError) as e:
        load({}, env={}, toml_path=_toml(tmp_path, "slots = 'x'\n"))
    assert e.value.field == "slots"


def test_config_is_frozen_and_validated_directly() -> None:
    cfg = PeerConfig(http="[::1]:0")
    with pytest.raises(AttributeError):
        cfg.slots = 3  # type: ignore[misc]
    with pytest.raises(ConfigError):
        PeerConfig(slots=0)


def test_peer_exits_2_on_a_bad_setting(capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from peer.main import main

    monkeypatch.setenv("BANZAI_SLOTS", "zero")
    with pytest.raises(SystemExit) as e:
        main(["--http", "127.0.0.1:0"])
    assert e.value.code == 2
    assert "slots" in capsys.readouterr().err


# -- every setting is declared once and reachable three ways -----------------------------
SAMPLES: dict[str, object] = {  # values that pass validation; others follow from the type
    "http": "127.0.0.1:1111", "gossip": "[::1]:2222", "join": ("10.0.0.1:1", "10.0.0.2:2"),
    "store": "kubo", "ipfs_api": "http://127.0.0.1:5001", "log_level": "DEBUG",
    "fetch_allow": ("127.0.0.1/32", "fd00::/8"), "public_gateway": True,
    "allow_shell": True, "allow_containers": True, "container_network": True,
    "container_runtime": "docker", "task_log_max_bytes": 4096,
    "gateway_codec_conversion": True, "kubo_public_swarm": True,
    "labels": ("site=lab2", "gpu.model=none"),
}


def _samples(tmp_path: Path) -> dict[str, object]:
    by_kind: dict[type, object] = {int: 7, float: 2.5, bool: False, str: "sample",
                                   Path: tmp_path / "sample", tuple: ("a", "b")}
    out = {s.name: SAMPLES.get(s.name, by_kind[s.kind]) for s in SPECS}
    defaults = PeerConfig()
    for name, value in out.items():  # a sample must differ from the default to show anything
        assert getattr(defaults, name) != value, name
    return out


def _text(value: object) -> str:
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def test_every_setting_is_reachable_by_flag_env_and_toml(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    samples = _samples(tmp_path)
    assert {s.name for s in SPECS} == set(PeerConfig.__dataclass_fields__)
    toml = "".join(f"{k} = {str(v).lower() if isinstance(v, bool) else json.dumps(_plain(v))}\n"
                   for k, v in samples.items())
    from_toml = load({}, env={}, toml_path=_toml(tmp_path, toml))
    env = {s.env: _text(samples[s.name]) for s in SPECS}
    assert all(var == "BANZAI_" + s.name.upper() for s, var in zip(SPECS, env, strict=True))
    from_env = load({}, env=env)
    for var in [v for v in os.environ if v.startswith("BANZAI_")]:
        monkeypatch.delenv(var)
    argv: list[str] = []
    actions = {a.dest: a for a in build_parser()._actions}
    for spec in SPECS:
        action, value = actions[spec.name], samples[spec.name]
        assert spec.flag in action.option_strings and action.help, spec.name
        if isinstance(value, bool):
            argv.append(spec.flag)
        else:
            for item in value if isinstance(value, tuple) else (value,):
                argv += [spec.flag, str(item)]
    from_flags, _ = from_args(argv)
    for cfg in (from_toml, from_env, from_flags):
        assert {k: getattr(cfg, k) for k in samples} == samples


def _plain(value: object) -> object:
    return list(value) if isinstance(value, tuple) else str(value) if isinstance(
        value, Path) else value


def test_settings_derive_flag_and_parsing_from_the_field() -> None:
    spec = {s.name: s for s in SPECS}
    assert spec["mdns"].flag == "--no-mdns" and spec["task_modules"].flag == "--task-module"
    assert spec["lease_s"].flag == "--lease-s" and spec["lease_s"].env == "BANZAI_LEASE_S"
    assert spec["worker_memory_mb"].kind is int and spec["secret_file"].kind is Path
    assert spec["join"].parse("a:1, b:2,") == ("a:1", "b:2")
    # the gossip transport's bound of proven connections (review r2 of session 48, H2)
    assert spec["gossip_max_connections"].flag == "--gossip-max-connections"
    assert build_parser().parse_args(["--gossip-max-connections", "512"]
                                     ).gossip_max_connections == 512
    assert spec["mdns"].parse("yes") is True and spec["mdns"].parse("0") is False
    with pytest.raises(ConfigError) as e:
        spec["ack_timeout_s"].parse("soon")
    assert e.value.field == "ack_timeout_s"
    with pytest.raises(SystemExit):  # argparse checks choices and numbers itself
        build_parser().parse_args(["--store", "s3"])


def test_default_worker_memory_is_half_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 16 * 2**30 // 4096}  # 16 GiB
    monkeypatch.setattr(os, "sysconf", lambda name: sizes[name])
    assert default_worker_memory_mb() == 8192
    sizes["SC_PHYS_PAGES"] = 2 * 2**30 // 4096  # 2 GiB: the floor
    assert default_worker_memory_mb() == 2048


@pytest.mark.parametrize("name", ["max_tasks_per_job", "max_workflow_bytes", "max_body_bytes",
                                  "compact_read_back_entries", "gossip_max_connections",
                                  "max_input_entries"])
def test_bounds_must_be_positive(name: str) -> None:
    with pytest.raises(ConfigError) as e:
        PeerConfig(**{name: 0})
    assert e.value.field == name


def test_lanes_are_on_by_default_off_by_flag_env_or_toml(tmp_path: Path) -> None:
    """Lanes are on unless turned off (session 44); `--lanes`, the flag of the releases that
    had them off by default, still parses (a script's or test's explicit choice) and sets
    lanes, not --lanes-min-job-tasks."""
    assert PeerConfig().lanes is True and from_args([])[0].lanes is True
    assert from_args(["--no-lanes"])[0].lanes is False
    on, _ = from_args(["--lanes", "--slots", "1"])
    assert on.lanes is True and on.slots == 1 and on.lanes_min_job_tasks == 32
    assert load({}, env={"BANZAI_LANES": "0"}).lanes is False
    assert load({}, env={}, toml_path=_toml(tmp_path, "lanes = false\n")).lanes is False
    # a flag beats the environment either way
    assert load({"lanes": True}, env={"BANZAI_LANES": "0"}).lanes is True
    usage = build_parser().format_usage()
    assert "[--no-lanes]" in usage and "[--lanes]" not in usage  # listed as --no-lanes only


@pytest.mark.parametrize("spec", [s for s in SPECS if s.kind is bool], ids=lambda s: s.name)
def test_each_switch_lists_the_form_off_its_default_and_takes_the_other_if_it_says(
        spec: SettingSpec) -> None:
    """Each boolean setting lists the form that changes its default (--NAME or --no-NAME);
    the other parses too only where the setting says `both_forms` (lanes, whose default may
    change: a script says either way). Elsewhere it is not added: each added name takes
    prefixes an earlier release's abbreviations used (review r2, session 43, F1)."""
    on, off = spec.bool_flag(True), spec.bool_flag(False)
    listed, other = (off, on) if spec.default is True else (on, off)
    assert getattr(from_args([listed])[0], spec.name) is (spec.default is not True)
    assert getattr(from_args([])[0], spec.name) is spec.default
    usage = build_parser().format_usage()
    assert f"[{listed}]" in usage and f"[{other}]" not in usage
    if spec.setting.both_forms:
        assert getattr(from_args([other])[0], spec.name) is spec.default
    else:
        assert other not in build_parser()._option_string_actions


@pytest.mark.parametrize(("argv", "name", "value"), [
    (["--mdns", "eth0"], "mdns_interfaces", ("eth0",)),  # (abbreviations argparse takes)
    (["--w", "1"], "worker_memory_mb", 1),
    (["--no-p"], "partial_outputs", False)])
def test_abbreviations_of_earlier_releases_still_parse(
        argv: list[str], name: str, value: object) -> None:
    """Abbreviations an earlier release's command line may hold (review r2, F1: every
    switch's second form made these ambiguous or another flag)."""
    assert getattr(from_args(argv)[0], name) == value


def test_lanes_min_job_tasks_may_be_zero_not_negative() -> None:
    assert PeerConfig(lanes_min_job_tasks=0).lanes_min_job_tasks == 0  # every job in lanes
    with pytest.raises(ConfigError) as e:
        PeerConfig(lanes_min_job_tasks=-1)
    assert e.value.field == "lanes_min_job_tasks" and "at least 0" in e.value.message


# -- values are parsed, never coerced ----------------------------------------------------
@pytest.mark.parametrize(("line", "field"), [
    ("slots = 2.9", "slots"),  # int(2.9) made it 2, silently
    ("slots = true", "slots"),  # a bool is not a number
    ("mdns = 2", "mdns"),  # bool(...) made it False
    ('mdns = "maybe"', "mdns"),
    ("lease_s = true", "lease_s"),
    ("lease_s = nan", "lease_s"),
    ("mesh_name = 5", "mesh_name"),  # str(5) made it "5"
    ("join = [1, 2]", "join"),  # each item str()ed
    ("data_dir = 3", "data_dir"),
])
def test_a_toml_value_of_the_wrong_type_is_an_error_naming_the_setting(
        tmp_path: Path, line: str, field: str) -> None:
    path = tmp_path / "peer.toml"
    path.write_text(line + "\n")
    with pytest.raises(ConfigError, match=f"^{field}: invalid value .* \\(expected ") as e:
        load({}, env={}, toml_path=path)
    assert e.value.field == field


@pytest.mark.parametrize(("env", "want"), [
    ({"BANZAI_MDNS": "on"}, ("mdns", True)),  # was False
    ({"BANZAI_MDNS": "off"}, ("mdns", False)),
    ({"BANZAI_MDNS": " Yes "}, ("mdns", True)),
    ({"BANZAI_SLOTS": " 3 "}, ("slots", 3)),
    ({"BANZAI_LEASE_S": "2"}, ("lease_s", 2.0)),
])
def test_environment_words_and_numbers_parse(env: dict[str, str],
                                             want: tuple[str, object]) -> None:
    assert getattr(load({}, env=env), want[0]) == want[1]


def test_a_whole_float_in_toml_is_a_whole_number_and_0_1_are_booleans(tmp_path: Path) -> None:
    path = tmp_path / "peer.toml"
    path.write_text("slots = 2.0\nlease_s = 3\nmdns = 0\n")
    cfg = load({}, env={}, toml_path=path)
    assert (cfg.slots, cfg.lease_s, cfg.mdns) == (2, 3.0, False)
    assert isinstance(cfg.lease_s, float)


def test_an_environment_bool_that_is_no_word_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"^mdns: invalid value '2' "):
        load({}, env={"BANZAI_MDNS": "2"})


@pytest.mark.parametrize(("join", "words"), [
    ("127.1:7000", "bad host"), ("2130706433:7000", "bad host"),
    ("127.0.0.1:07000", "leading zeros"),
])
def test_a_join_address_the_mesh_would_refuse_is_a_config_error(join: str, words: str) -> None:
    """A numeric host that is no IP (libzmq reads it as one) or a port with leading zeros:
    refused at load, naming the field and the address (not a traceback at startup)."""
    with pytest.raises(ConfigError) as e:
        load({"join": [join]}, env={})
    assert e.value.field == "join" and words in e.value.message and join in e.value.message


def test_a_join_host_name_and_ipv6_address_still_load() -> None:
    cfg = load({"join": ["Peer-A.lan:7000", "[::1]:7000", "localhost:7001"]}, env={})
    assert cfg.join == ("Peer-A.lan:7000", "[::1]:7000", "localhost:7001")


# -- --restart-hold-s (session 52, helper e) ----------------------------------------------
@pytest.mark.parametrize(("argv", "held_s"), [
    ([], 3.0), (["--restart-hold-s", "0"], 0.0), (["--restart-hold-s", "1.5"], 1.5)])
def test_restart_hold_s_is_a_flag_and_reaches_the_scheduler(
        tmp_path: Path, argv: list[str], held_s: float) -> None:
    from peer.node import Node

    cfg, _ = from_args([*argv, "--data-dir", str(tmp_path / "peer"), "--no-mdns"])
    assert cfg.restart_hold_s == held_s
    node = Node(cfg)
    try:
        assert node.scheduler.cfg.restart_hold_s == held_s
    finally:
        node.log.close()


@pytest.mark.parametrize("value", ["-1", "-0.5", "inf", "-inf", "1e999"])
def test_a_negative_or_endless_restart_hold_is_an_error_naming_the_flag(value: str) -> None:
    with pytest.raises(ConfigError) as e:
        from_args([f"--restart-hold-s={value}"])
    assert e.value.field == "restart_hold_s" and "--restart-hold-s" in e.value.message
    assert "0 or more" in e.value.message


@pytest.mark.parametrize("value", ["nan", "soon", ""])
def test_a_restart_hold_that_is_no_number_is_an_error_naming_it(value: str) -> None:
    with pytest.raises(ConfigError) as e:
        load({}, env={"BANZAI_RESTART_HOLD_S": value})
    assert e.value.field == "restart_hold_s" and "restart_hold_s" in e.value.message
