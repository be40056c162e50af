"""`tug` and the real docker CLI (28.x) side by side on the same daemon: Go templates (docker
executes them client-side, so it is the reference for `tug inspect -f`/`ps --format`), and the
"No such object" answers of `inspect` for a missing name."""

from __future__ import annotations

import os
import subprocess

import pytest

import engine_support
from conftest import require_binary
from engine_support import Daemon

daemon = engine_support.daemon

TEMPLATES = [
    "{{range $k, $v := .Config.Labels}}{{$k}}={{$v}} {{end}}",
    '{{index .Config.Labels "com.example.tier"}}',
    "{{.Config.Labels.a}}",
    "{{len .Config.Env}} {{len .Config.Labels}}",
    "{{if .State.Running}}up{{else}}down{{end}}",
    "{{if eq .State.ExitCode 1}}one{{else if eq .State.ExitCode 0}}zero{{else}}other{{end}}",
    '{{printf "%s-%d|%-6s|%5d|%v" .Name .State.ExitCode "ab" 42 .Config.Cmd}}',
    '{{printf "%q %T %T" .Name .State.Pid .State.Running}}',
    '{{join .Config.Env ","}}',
    '{{lower "ABC"}} {{upper .Name}} {{title "hello world"}}',
    "{{json .Config.Labels}}",
    "{{json .Config.Cmd}} {{json .Mounts}}",
    "{{.Name | upper | printf \"<%s>\"}}",
    "{{range .Mounts}}{{.Type}} {{.Name}} {{.Destination}} {{.RW}};{{end}}",
    "{{(index .Mounts 0).Destination}}",
    "{{.Config.Labels}}",
    "{{.Config.Env}} {{.Config.Cmd}} {{.Config.Entrypoint}}",
    "{{.Config.ExposedPorts}} {{json .Config.ExposedPorts}}",
    "{{range $p, $c := .Config.ExposedPorts}}{{$p}} {{end}}",
    "{{$x := .Name}}{{$x = upper $x}}{{$x}}",
    "  {{- .Name -}}  ",
    "{{with .State}}{{.Status}} {{.ExitCode}}{{end}}",
    "{{with .Config.Domainname}}set{{else}}unset{{end}}",
    "{{range .Config.Env}}{{if eq . \"A=1\"}}{{continue}}{{end}}{{.}};{{end}}",
    "{{range .Config.Cmd}}[{{.}}]{{break}}{{end}}",
    '{{index .Config.Labels "a" | printf "%q"}}',
    '{{split "a:b:c" ":"}} {{truncate .Name 3}} {{pad "x" 1 2}}|',
    '{{and .State.Running .Name}} {{or .Config.Domainname "dflt"}} {{not .State.Running}}',
    "{{println .Name}}",
    "{{/* a comment */}}x",
    "{{range $i, $e := .Config.Env}}{{$i}}:{{$e}} {{end}}",
    '{{len .Config.Labels | printf "%d labels"}}',
    "{{slice .Id 0 12}}",
    '{{eq .State.Status "exited" "running"}} {{ne 1 2}} {{lt 1 2}} {{ge .RestartCount 0}}',
    '{{html "<a&b>"}} {{print "a" 1 2 "b"}}',
    "{{if and .State.Running (eq .State.ExitCode 0)}}both{{end}}",
    "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.RestartPolicy.Name}}",
    "{{.State.Health}} {{.State.OOMKilled}} {{.RestartCount}}",
    "{{json .State.Running}} {{json .Name}}",
    # docker's documented examples (docs.docker.com, "Format command and log output", "inspect")
    "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
    "{{range .NetworkSettings.Networks}}{{.MacAddress}}{{end}}",
    "{{.LogPath}} {{.Config.Image}}",
    "{{range $p, $conf := .NetworkSettings.Ports}} {{$p}} -> {{(index $conf 0).HostPort}} {{end}}",
    '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}}{{end}}{{end}}',
    # the whole documents, field order and zero values included
    "{{json .}}",
    "{{json .Config}}",
    "{{json .HostConfig}}",
    "{{json .NetworkSettings}}",
]

PS_FORMATS = [
    '{{.Names}} {{.Label "com.example.tier"}} {{.Image}} {{.Command}} {{.State}}',
    "{{.Labels}}",
    "{{.Mounts}} {{.LocalVolumes}} {{.Ports}}",
    "{{json .Names}} {{.ID}}",
    "{{json .}}",
    "table {{.Names}}\\t{{.Image}}",
]


@pytest.fixture(scope="module")
def clis(daemon: Daemon, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    exe = require_binary("docker")
    cfg = tmp_path_factory.mktemp("dockercfg")
    env = dict(os.environ, DOCKER_HOST=daemon.host, DOCKER_CONFIG=str(cfg))
    env.pop("DOCKER_CONTEXT", None)

    def docker(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([exe, *args], capture_output=True, timeout=60, env=env)

    return docker, daemon.tug


@pytest.fixture(scope="module")
def target(clis, daemon: Daemon):  # type: ignore[no-untyped-def]
    docker, _ = clis
    p = docker("run", "-d", "--name", "fmt1", "-l", "b=2", "-l", "a=1", "-l", "com.example.tier=front", "-l", "html=<b>&",
               "-e", "A=1", "-e", "B=2", "-v", "fmtvol:/data", "--expose", "80", "--expose", "53/udp",
               "busybox", "sleep", "120")
    assert p.returncode == 0, p.stderr
    yield "fmt1"
    docker("rm", "-f", "fmt1")
    docker("volume", "rm", "fmtvol")


def test_inspect_templates_match_docker(clis, target: str) -> None:  # type: ignore[no-untyped-def]
    docker, tug = clis
    # one template per run: docker executes over its typed structs and falls back to the raw JSON
    # only when that fails, so templates combined into one could take the other path
    diffs = []
    for t in TEMPLATES:
        want = docker("inspect", "-f", t, target)
        assert want.returncode == 0, (t, want.stderr)
        got = tug("inspect", "-f", t, target)
        if (got.returncode, got.stdout) != (0, want.stdout):
            diffs.append((t, want.stdout, got.stdout, got.stderr))
    assert diffs == []


@pytest.mark.parametrize("fmt", PS_FORMATS)
def test_ps_formats_match_docker(clis, target: str, fmt: str) -> None:  # type: ignore[no-untyped-def]
    docker, tug = clis
    want = docker("ps", "--filter", f"name={target}", "--format", fmt)
    got = tug("ps", "--filter", f"name={target}", "--format", fmt)
    assert want.returncode == 0, want.stderr
    assert got.stdout.decode() == want.stdout.decode(), got.stderr


def test_ps_json_format_matches_docker(clis, target: str) -> None:  # type: ignore[no-untyped-def]
    import json

    docker, tug = clis
    want = json.loads(docker("ps", "--filter", f"name={target}", "--format", "json").stdout)
    got = json.loads(tug("ps", "--filter", f"name={target}", "--format", "json").stdout)
    for row in (want, got):
        row.pop("RunningFor")
        row.pop("Status")
    assert got == want


def test_plain_inspect_prints_what_docker_prints(clis, target: str) -> None:  # type: ignore[no-untyped-def]
    docker, tug = clis
    for args in (("inspect", target), ("inspect", "busybox"), ("volume", "inspect", "fmtvol"),
                 ("inspect", "-f", "{{.Id}}", "missing-thing")):
        want, got = docker(*args), tug(*args)
        assert (got.returncode, got.stdout) == (want.returncode, want.stdout), (args, got.stderr)


def test_inspect_missing_name_is_no_such_object(clis) -> None:  # type: ignore[no-untyped-def]
    docker, tug = clis
    for cli in (docker, tug):
        p = cli("inspect", "missing-thing")
        assert p.returncode == 1
        assert p.stdout.strip() == b"[]"
        assert p.stderr.strip() == b"Error: No such object: missing-thing"
    for kind, msg in (("network", b"network missing-thing not found"),
                      ("volume", b"get missing-thing: no such volume"),
                      ("container", b"No such container: missing-thing")):
        d = docker("inspect", "--type", kind, "missing-thing")
        t = tug("inspect", "--type", kind, "missing-thing")
        assert d.returncode == t.returncode == 1
        assert d.stderr.strip() == t.stderr.strip() == b"Error response from daemon: " + msg
    # one found, one missing: the found one is printed, the exit code is still 1
    for cli in (docker, tug):
        p = cli("inspect", "-f", "{{.Os}}", "busybox", "missing-thing")
        assert (p.returncode, p.stdout.strip()) == (1, b"linux")
        assert b"No such object: missing-thing" in p.stderr


def test_ps_all_shows_no_ports_once_exited(clis) -> None:  # type: ignore[no-untyped-def]
    docker, tug = clis
    assert docker("run", "--name", "fmt2", "--expose", "80", "busybox", "true").returncode == 0
    try:
        for cli in (docker, tug):
            p = cli("ps", "-a", "--filter", "name=fmt2", "--format", "{{.Names}}|{{.Ports}}|")
            assert p.stdout == b"fmt2||\n"
    finally:
        docker("rm", "fmt2")
