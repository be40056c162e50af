"""Engine helpers without root: signals, times, flags, json-file logs, secure paths, spec basics."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tugboat.cli.flags import FlagError, parse
from tugboat.engine.logs import JsonFileWriter, follow_from, read_logs
from tugboat.engine.mounts import secure_join
from tugboat.engine.spec import _entry_cmd, merge_env, resolve_user, validate
from tugboat.engine.util import human_duration, parse_bytes, parse_signal, parse_time
from tugboat.errors import InvalidArgument


def test_parse_signal_accepts_docker_forms() -> None:
    assert parse_signal("HUP") == signal.SIGHUP
    assert parse_signal("SIGUSR1") == signal.SIGUSR1
    assert parse_signal("9") == 9
    assert parse_signal("winch") == signal.SIGWINCH
    assert parse_signal(None) == signal.SIGKILL
    with pytest.raises(InvalidArgument):
        parse_signal("NOPE")
    with pytest.raises(InvalidArgument):
        parse_signal("99")


def test_parse_time_and_durations() -> None:
    assert parse_time("1700000000.5") == 1700000000.5
    assert abs(parse_time("1h") - (time.time() - 3600)) < 2
    assert parse_time("2026-11-28T23:14:05.108763000Z") == pytest.approx(1795907645.108763, abs=1e-3)
    assert human_duration(0.2) == "Less than a second"
    assert human_duration(5) == "5 seconds"
    assert human_duration(90) == "About a minute"
    assert parse_bytes("512m") == 512 * 1024 * 1024
    with pytest.raises(InvalidArgument):
        parse_bytes("lots")


def test_flags_parser_docker_style() -> None:
    spec = {"-d|--detach": bool, "-i|--interactive": bool, "-t|--tty": bool, "-e|--env": list,
            "--name": str, "-p|--publish": list, "--cpu-shares|-c": int, "--net|--network": str}
    o, pos = parse(["-it", "-e", "A=1", "-eB=2", "--name=x", "-p", "80:80", "--network", "none",
                    "busybox", "sh", "-c", "echo -d"], spec, interspersed=False)
    assert o["interactive"] and o["tty"] and not o["detach"]
    assert o["env"] == ["A=1", "B=2"] and o["name"] == "x" and o["publish"] == ["80:80"]
    assert o["network"] == "none"
    assert pos == ["busybox", "sh", "-c", "echo -d"]
    with pytest.raises(FlagError, match="unknown flag: --bogus"):
        parse(["--bogus"], spec)
    with pytest.raises(FlagError, match="needs an argument"):
        parse(["--name"], spec)
    with pytest.raises(FlagError, match="invalid argument"):
        parse(["-c", "x"], spec)


def test_json_file_logs_rotation_tail_since(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "c-json.log")
    w = JsonFileWriter(path, max_size="1k", max_file=3)
    for i in range(100):
        w.write("stdout" if i % 2 == 0 else "stderr", f"line {i}\n".encode())
    w.write("stdout", b"partial")
    w.close()
    assert os.path.exists(path + ".1")
    assert not os.path.exists(path + ".3")
    entries, _ = read_logs(path, tail=3)
    assert [e[2] for e in entries] == [b"line 98\n", b"line 99\n", b"partial"]
    only_err, _ = read_logs(path, tail=2, streams=("stderr",))
    assert [e[2] for e in only_err] == [b"line 97\n", b"line 99\n"]
    with open(path) as f:
        rec = json.loads(f.readline())
    assert set(rec) == {"log", "stream", "time"} and rec["time"].endswith("Z")
    future, _ = read_logs(path, since=time.time() + 60)
    assert future == []


def test_follow_sees_new_lines(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "f.log")
    w = JsonFileWriter(path)
    w.write("stdout", b"one\n")
    _, off = read_logs(path)
    gen = follow_from(path, off)
    assert next(gen)[1] == []
    w.write("stdout", b"two\n")
    lines = next(gen)[1]
    assert len(lines) == 1 and json.loads(lines[0])["log"] == "two\n"
    w.close()


def test_secure_join_never_leaves_root(tmp_path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    os.symlink("/", root / "up")
    os.symlink("../../../../../etc", root / "rel")
    os.symlink("/etc/passwd", root / "abs")
    r = os.path.realpath(root)
    assert secure_join(str(root), "/up/etc/shadow") == f"{r}/etc/shadow"
    assert secure_join(str(root), "rel/x") == f"{r}/etc/x"
    assert secure_join(str(root), "../../..") == r
    assert secure_join(str(root), "abs") == f"{r}/etc/passwd"


def test_entrypoint_cmd_and_env_semantics() -> None:
    img = {"Entrypoint": ["/entry"], "Cmd": ["default"]}
    assert _entry_cmd({}, img) == (["/entry"], ["default"])
    assert _entry_cmd({"Cmd": ["x"]}, img) == (["/entry"], ["x"])
    assert _entry_cmd({"Entrypoint": ["sh"]}, img) == (["sh"], [])  # overriding ENTRYPOINT resets CMD
    assert _entry_cmd({"Entrypoint": [""], "Cmd": ["ls"]}, img) == ([], ["ls"])
    env = merge_env(["PATH=/img", "A=1"], ["A=2", "B=3"])
    assert env == ["PATH=/img", "A=2", "B=3"]
    assert merge_env([], [])[0].startswith("PATH=/usr/local/sbin")


def test_user_lookup_in_image_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nwww:x:33:33::/var/www:/bin/false\n")
    (tmp_path / "etc/group").write_text("root:x:0:\nwww:x:33:\nextra:x:44:www\n")
    assert resolve_user(str(tmp_path), "www") == {"uid": 33, "gid": 33, "additionalGids": [44]}
    assert resolve_user(str(tmp_path), "1000:44") == {"uid": 1000, "gid": 44}
    assert resolve_user(str(tmp_path), "0:www") == {"uid": 0, "gid": 33}
    with pytest.raises(InvalidArgument, match="unable to find user nobody"):
        resolve_user(str(tmp_path), "nobody")


def test_validate_rejects_absurd_values() -> None:
    with pytest.raises(InvalidArgument, match=r"HostConfig\.Memory"):
        validate({}, {"Memory": -1})
    with pytest.raises(InvalidArgument, match="CPUs"):
        validate({}, {"NanoCpus": (os.cpu_count() or 1) * 10**9 + 1})
    with pytest.raises(InvalidArgument, match="restart policy"):
        validate({}, {"RestartPolicy": {"Name": "sometimes"}})
    with pytest.raises(InvalidArgument, match="AutoRemove"):
        validate({}, {"AutoRemove": True, "RestartPolicy": {"Name": "always"}})
    with pytest.raises(InvalidArgument, match=r"Config\.Cmd"):
        validate({"Cmd": [1, 2]}, {})
    validate({"Cmd": ["ok"]}, {"Memory": 64 * 1024 * 1024, "NanoCpus": 5 * 10**8})


def test_dumps_compact_reads_back_as_json_and_falls_back() -> None:
    import json as _json

    from tugboat.engine.util import dumps_compact

    rec = {"Id": "a" * 64, "State": {"Running": True, "Pid": 7, "ExitCode": 0}, "Env": ["X=é"],
           "Nested": [1.5, None, {"k": []}], "Ports": {80: "x"}}
    out = dumps_compact(rec)
    assert _json.loads(out) == _json.loads(_json.dumps(rec))
    assert b" " not in out.replace(b"X=\xc3\xa9", b"")  # compact separators
    odd = {"Name": "bad\udcff"}  # a lone surrogate (a non-UTF-8 file name): msgspec refuses it
    assert _json.loads(dumps_compact(odd)) == odd
