"""Docker-style output helpers of the image commands."""

from __future__ import annotations

import time

from tugboat.cli.image_format import format_rows, human_duration, human_size, render, since, tabwrite


def test_human_size_like_docker() -> None:
    assert human_size(0) == "0B"
    assert human_size(999) == "999B"
    assert human_size(1982806) == "1.98MB"
    assert human_size(4_261_544) == "4.26MB"
    assert human_size(77_800_000) == "77.8MB"
    assert human_size(1_234_567_890) == "1.23GB"
    assert human_size(12_345) == "12.3kB"


def test_human_duration() -> None:
    assert human_duration(0.2) == "Less than a second"
    assert human_duration(5) == "5 seconds"
    assert human_duration(70) == "About a minute"
    assert human_duration(3600) == "About an hour"
    assert human_duration(3 * 86400) == "3 days"
    assert human_duration(20 * 86400) == "2 weeks"
    assert human_duration(200 * 86400) == "6 months"
    assert human_duration(900 * 86400) == "2 years"
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 7200))
    assert since(created) == "2 hours ago"


def test_tabwriter() -> None:
    out = tabwrite([["REPOSITORY", "TAG", "SIZE"], ["busybox", "latest", "1MB"]])
    assert out == "REPOSITORY   TAG       SIZE\nbusybox      latest    1MB\n"


def test_templates() -> None:
    obj = {"Repository": "x", "Tag": "1", "Labels": {"a": "b"}, "List": ["p", "q"], "N": None}
    assert render("{{.Repository}}:{{.Tag}}", obj) == "x:1"
    assert render("{{json .Labels}}", obj) == '{"a":"b"}'
    assert render('{{index .Labels "a"}}', obj) == "b"
    assert render('{{join .List ","}}', obj) == "p,q"
    assert render("{{upper .Repository}}\\t{{.N}}", obj) == "X\t<no value>"
    assert render("{{ .Labels.a }}", obj) == "b"
    rows = format_rows("table {{.Repository}}\t{{.Tag}}", [obj], {"Repository": "REPOSITORY", "Tag": "TAG"})
    assert rows.splitlines() == ["REPOSITORY   TAG", "x            1"]
    assert format_rows("json", [obj], {}).startswith('{"Labels":{"a":"b"},')  # docker: sorted keys
