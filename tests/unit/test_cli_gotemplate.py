"""The CLI's Go text/template engine: docker's documented --format forms over inspect-shaped data
(the expected strings are what the docker CLI 28 prints for the same data; see also the compat test
that runs both CLIs side by side)."""

from __future__ import annotations

import pytest

from tugboat.cli.gotemplate import TemplateError, render
from tugboat.cli.image_format import format_rows

DATA = {
    "Id": "e72c5e43cc24aa0011",
    "Name": "/web",
    "RestartCount": 0,
    "Config": {"Labels": {"b": "2", "a": "1", "com.x.y": "z"}, "Env": ["A=1", "B=2"], "Cmd": ["sleep", "9"],
               "Entrypoint": None, "ExposedPorts": {"80/tcp": {}}, "Domainname": ""},
    "State": {"Status": "running", "Running": True, "ExitCode": 0, "Pid": 4242},
    "Mounts": [{"Type": "volume", "Name": "v1", "Source": "/s", "Destination": "/data", "RW": True}],
    "NetworkSettings": {"Networks": {"bridge": {"IPAddress": "172.17.0.2"}, "backend": {"IPAddress": "10.0.0.5"}}},
    "HostConfig": {"Memory": 0, "NanoCpus": 1500000000},
}


@pytest.mark.parametrize(("template", "expected"), [
    ("{{.Name}} {{.State.Status}}", "/web running"),
    ("{{range $k, $v := .Config.Labels}}{{$k}}={{$v}} {{end}}", "a=1 b=2 com.x.y=z "),
    ('{{index .Config.Labels "com.x.y"}}', "z"),
    ("{{.Config.Labels.a}}", "1"),
    ("{{len .Config.Env}} {{len .Config.Labels}}", "2 3"),
    ("{{if .State.Running}}up{{else}}down{{end}}", "up"),
    ("{{if eq .State.ExitCode 1}}one{{else if eq .State.ExitCode 0}}zero{{else}}other{{end}}", "zero"),
    ('{{printf "%s-%d|%-4s|%5.1f" .Name .State.ExitCode "ab" 2.25}}', "/web-0|ab  |  2.2"),
    ("{{printf \"%v %q\" .Config.Env .Name}}", '[A=1 B=2] "/web"'),
    ('{{join .Config.Env ","}}', "A=1,B=2"),
    ('{{lower "ABC"}} {{upper .Name}} {{title "hello world"}}', "abc /WEB Hello World"),
    ("{{json .Config.Labels}}", '{"a":"1","b":"2","com.x.y":"z"}'),
    ("{{json .State}}", '{"Status":"running","Running":true,"ExitCode":0,"Pid":4242}'),
    ("{{.Name | upper | printf \"<%s>\"}}", "</WEB>"),
    ("{{range .Mounts}}{{.Type}} {{.Name}} {{.Destination}} {{.RW}}{{end}}", "volume v1 /data true"),
    ("{{range $n, $c := .NetworkSettings.Networks}}{{$n}}={{$c.IPAddress}};{{end}}",
     "backend=10.0.0.5;bridge=172.17.0.2;"),
    ("{{.NetworkSettings.Networks.bridge.IPAddress}}", "172.17.0.2"),
    ("{{.Config.Labels}}", "map[a:1 b:2 com.x.y:z]"),
    ("{{.Config.Env}} {{.Config.Entrypoint}} {{.Config.ExposedPorts}}", "[A=1 B=2] [] map[80/tcp:{}]"),
    ("{{$x := .Name}}{{$x = upper $x}}{{$x}}", "/WEB"),
    ("  {{- .Name -}}  \n", "/web"),
    ("{{with .State}}{{.ExitCode}} {{printf \"%T\" .Pid}}{{end}}", "0 int"),
    ("{{with .Config.Domainname}}set{{else}}unset{{end}}", "unset"),
    ("{{range .Config.Env}}{{if eq . \"A=1\"}}{{continue}}{{end}}{{.}};{{end}}", "B=2;"),
    ("{{range .Config.Env}}{{.}};{{break}}{{end}}", "A=1;"),
    ("{{(index .Mounts 0).Destination}}", "/data"),
    ('{{index .Config.Labels "a" | printf "%q"}}', '"1"'),
    ('{{split "a:b" ":"}} {{truncate .Name 3}} {{pad "x" 1 2}}|', "[a b] /we  x  |"),
    ('{{and .State.Running .Name}} {{or .Config.Domainname "dflt"}} {{not .State.Running}}', "/web dflt false"),
    ("{{println .Name}}", "/web\n"),
    ("{{/* a comment */}}x", "x"),
    ("{{range $i, $e := .Config.Env}}{{$i}}:{{$e}} {{end}}", "0:A=1 1:B=2 "),
    ('{{len .Config.Labels | printf "%d labels"}}', "3 labels"),
    ("{{range .Nope}}x{{else}}none{{end}}", "none"),
    ("{{slice .Id 0 12}}", "e72c5e43cc24"),
    ('{{eq .State.Status "exited" "running"}} {{ne 1 2}} {{lt 1 2}} {{ge .RestartCount 0}}', "true true true true"),
    ('{{html "<a&b>"}} {{print "a" 1 2 "b"}}', "&lt;a&amp;b&gt; a1 2b"),
    ("{{if and .State.Running (eq .State.ExitCode 0)}}both{{end}}", "both"),
    ("{{.HostConfig.NanoCpus}} {{.Missing}} {{.State.Health}}", "1500000000 <no value> <nil>"),
    ("{{range $k, $v := .Config.Labels}}{{if ne $k \"b\"}}{{$k}}{{end}}{{end}}", "acom.x.y"),
])
def test_docker_documented_forms(template: str, expected: str) -> None:
    assert render(template, DATA) == expected


def test_callable_fields_take_arguments() -> None:
    row = {"Names": "web", "Label": lambda k: {"tier": "front"}.get(k, "")}
    assert render('{{.Names}} {{.Label "tier"}}|{{.Label "nope"}}|', row) == "web front||"
    assert render("{{json .}}", row) == '{"Names":"web"}'


@pytest.mark.parametrize("template", [
    "{{.Name", "{{if .A}}x", "{{end}}", "{{nosuchfunc .A}}", "{{range .Name}}x{{end}}", "{{.Name 1}}",
    "{{index .Config.Env 5}}", "{{break}}",
])
def test_errors_are_template_errors(template: str) -> None:
    with pytest.raises(TemplateError):
        render(template, DATA)


def test_table_rows_and_headers() -> None:
    rows = [{"ID": "abc", "Names": "web", "Labels": "a=1"}, {"ID": "def", "Names": "db", "Labels": ""}]
    out = format_rows("table {{.ID}}\\t{{.Names}}", rows, {"ID": "CONTAINER ID", "Names": "NAMES"})
    assert out.splitlines() == ["CONTAINER ID   NAMES", "abc            web", "def            db"]
    assert format_rows('{{if .Labels}}{{.Names}}{{end}}', rows, {}) == "web\n\n"


def test_nulls_print_as_go_prints_them() -> None:
    obj = {"N": None, "L": [1, None], "Cmd": None, "Labels": None, "Health": None}
    # a JSON null is a nil interface{}: "<no value>" printed directly, "<nil>" through fmt
    assert render("{{.N}}|{{printf \"%v\" .N}}|{{.L}}", obj) == "<no value>|<nil>|[1 <nil>]"
    # fields docker has typed as slices, maps and pointers print as their nil values do
    assert render("{{.Cmd}} {{.Labels}} {{.Health}} {{len .Cmd}} {{json .Labels}}", obj) == "[] map[] <nil> 0 null"
    assert render("{{if .Cmd}}x{{else}}empty{{end}}{{range .Labels}}x{{end}}", obj) == "empty"


def test_row_contexts_marshal_as_docker_formatter_contexts() -> None:
    from tugboat.cli.gotemplate import RowContext

    row = RowContext({"Names": "web", "Labels": "a=<b>&", "Label": lambda k: ""})
    # a row is a map to docker: sorted keys, HTML characters escaped; its fields are plain values
    assert render("{{json .}}", row) == '{"Labels":"a=\\u003cb\\u003e\\u0026","Names":"web"}'
    assert render("{{json .Labels}}", row) == '"a=<b>&"'
