"""The Dockerfile parser: directives, continuations, forms, heredocs, flags, errors with line numbers."""

from __future__ import annotations

import pytest

from tugboat.build.dockerfile import DockerfileError, parse, parse_go_duration, parse_words
from tugboat.errors import InvalidArgument


def one(text: str, cmd: str | None = None):
    df = parse("FROM scratch\n" + text)
    ins = df.stages[0].instructions[0]
    if cmd:
        assert ins.cmd == cmd
    return ins


def test_continuations_keep_inner_whitespace_and_skip_comments_and_blank_lines() -> None:
    df = parse("FROM busybox\nRUN echo a \\\n  # a comment\n    b \\\n\n    c\nRUN x\n")
    run, run2 = df.stages[0].instructions
    assert run.args == ["echo a     b     c"]
    assert (run.line, run.end_line) == (2, 6)
    assert run2.line == 7
    assert any("empty continuation line" in w for w in df.warnings)


def test_continuation_allows_trailing_blanks_after_escape() -> None:
    run = one("RUN echo a \\   \n b\n")
    assert run.args == ["echo a  b"]


def test_escape_directive_backtick() -> None:
    df = parse("# escape=`\nFROM scratch\nRUN dir c:\\ `\n  d\nCOPY a\\b c\\\n")
    run, copy = df.stages[0].instructions
    assert df.escape == "`"
    assert run.args == ["dir c:\\   d"]
    assert copy.args == ["a\\b", "c\\"]


def test_directives_only_at_top_and_unknown_directive_ends_them() -> None:
    df = parse("# syntax=docker/dockerfile:1\n#  ESCAPE = `\nFROM scratch\n")
    assert df.directives == {"syntax": "docker/dockerfile:1", "escape": "`"}
    df = parse("# comment\n# escape=`\nFROM scratch\n")
    assert df.escape == "\\" and df.directives == {}
    df = parse("# unknown=1\n# escape=`\nFROM scratch\n")
    assert df.escape == "\\"
    df = parse("\n# escape=`\nFROM scratch\n")
    assert df.escape == "\\"
    df = parse("FROM scratch\n# escape=`\n")
    assert df.escape == "\\"


def test_bad_and_duplicate_directives() -> None:
    with pytest.raises(DockerfileError, match=r"Dockerfile:1: invalid escape token 'x'"):
        parse("# escape=x\nFROM scratch\n")
    with pytest.raises(DockerfileError, match="only one escape parser directive can be used"):
        parse("# escape=`\n# escape=\\\nFROM scratch\n")


def test_unknown_instruction_error_has_line_and_suggestion() -> None:
    with pytest.raises(DockerfileError) as ei:
        parse("FROM busybox\n\nFORM x\n")
    assert str(ei.value) == "Dockerfile:3: unknown instruction: FORM (did you mean FROM?)"
    assert ei.value.line == 3
    with pytest.raises(DockerfileError, match=r"^Dockerfile:2: unknown instruction: BLAHBLAH$"):
        parse("FROM busybox\nBLAHBLAH x\n")


def test_custom_filename_in_errors() -> None:
    with pytest.raises(DockerfileError, match=r"^app\.Dockerfile:1: no build stage in current context$"):
        parse("RUN true\n", filename="app.Dockerfile")


def test_empty_dockerfile() -> None:
    with pytest.raises(DockerfileError, match="cannot be empty"):
        parse("# only a comment\n\n")


def test_instructions_are_case_insensitive_and_bom_stripped() -> None:
    df = parse("\ufefffrom busybox as Base\nrun echo hi\n")
    assert df.stages[0].name == "base"
    assert df.stages[0].instructions[0].cmd == "RUN"


def test_json_and_shell_forms() -> None:
    assert one('RUN ["echo", "a b"]').json is True
    assert one('RUN ["echo", "a b"]').args == ["echo", "a b"]
    bad_json = one('RUN [ "echo", ]')
    assert bad_json.json is False and bad_json.args == ['[ "echo", ]']
    assert one("CMD echo $HOME").args == ["echo $HOME"]
    with pytest.raises(DockerfileError, match="arrays must be comprised of strings only"):
        one("CMD [1, 2]")
    assert one('ENTRYPOINT ["/bin/app"]  ').args == ["/bin/app"]


def test_shell_requires_json() -> None:
    with pytest.raises(DockerfileError, match="SHELL requires the arguments to be in JSON form"):
        one("SHELL /bin/bash -c")
    assert one('SHELL ["/bin/bash", "-c"]').args == ["/bin/bash", "-c"]


def test_from_forms_and_stage_names() -> None:
    df = parse("ARG V=1\nFROM --platform=$BUILDPLATFORM busybox:${V} AS Build\nFROM build\nFROM scratch\n")
    assert [s.name for s in df.stages] == ["build", None, None]
    assert df.stages[0].platform == "$BUILDPLATFORM"
    assert df.stages[0].base == "busybox:${V}"
    assert df.meta_args[0].pairs == [("V", "1")]
    assert df.stage("BUILD") is df.stages[0]
    assert df.stage("2") is df.stages[2]
    with pytest.raises(DockerfileError, match="FROM requires either one or three arguments"):
        parse("FROM a b\n")
    with pytest.raises(DockerfileError, match="invalid name for build stage"):
        parse("FROM a AS 1x\n")
    with pytest.raises(DockerfileError, match='Dockerfile:2: duplicate stage name "x"'):
        parse("FROM a AS x\nFROM b AS X\n")


def test_copy_add_flags() -> None:
    c = one("COPY --from=build --chown=app:app --chmod=0755 --link a b /dst/")
    assert c.flags == {"from": "build", "chown": "app:app", "chmod": "0755", "link": True}
    assert c.args == ["a", "b", "/dst/"]
    c = one('COPY ["a b", "/d/"]')
    assert c.json and c.args == ["a b", "/d/"]
    a = one("ADD --link=false --checksum=sha256:abc http://x/y /y")
    assert a.flags == {"link": False, "checksum": "sha256:abc"}
    c = one("COPY --exclude=*.md --exclude=*.txt . /app")
    assert c.flags["exclude"] == ["*.md", "*.txt"]


def test_flag_errors() -> None:
    with pytest.raises(DockerfileError, match=r"Dockerfile:2: unknown flag: frm"):
        one("COPY --frm=x a b")
    with pytest.raises(DockerfileError, match="missing a value on flag: from"):
        one("COPY --from a b")
    with pytest.raises(DockerfileError, match="duplicate flag specified: from"):
        one("COPY --from=a --from=b a b")
    with pytest.raises(DockerfileError, match="expecting boolean value for flag link, not: maybe"):
        one("COPY --link=maybe a b")
    with pytest.raises(DockerfileError, match="unknown flag: foo"):
        one("ENV --foo=bar A=b")
    with pytest.raises(DockerfileError, match="COPY requires at least two arguments"):
        one("COPY onlyone")


def test_flag_values_with_quotes_and_double_dash() -> None:
    c = one('COPY --chown="a b" x y')
    assert c.flags["chown"] == "a b"
    r = one("RUN --mount=type=cache,target=/root/.cache --network=none pip install x")
    assert r.flags == {"mount": ["type=cache,target=/root/.cache"], "network": "none"}
    assert r.args == ["pip install x"]
    r = one("RUN -- --not-a-flag")
    assert r.args == ["--not-a-flag"]


def test_env_forms() -> None:
    e = one('ENV A=1 B="two words" C=three\\ four')
    assert e.pairs == [("A", "1"), ("B", '"two words"'), ("C", "three\\ four")]
    e = one("ENV OLD value with  spaces")
    assert e.pairs == [("OLD", "value with  spaces")]
    with pytest.raises(DockerfileError, match="ENV must have two arguments"):
        one("ENV ONLY")
    with pytest.raises(DockerfileError, match="can't find = in"):
        one("ENV A=1 B")
    lab = one('LABEL "com.example.vendor"="ACME Inc" version=1.0')
    assert lab.pairs == [('"com.example.vendor"', '"ACME Inc"'), ("version", "1.0")]


def test_arg_forms() -> None:
    a = one("ARG A B=2 C=")
    assert a.pairs == [("A", None), ("B", "2"), ("C", "")]
    with pytest.raises(DockerfileError, match="ARG requires at least one argument"):
        one("ARG")


def test_single_string_instructions() -> None:
    assert one("WORKDIR /a b").args == ["/a b"]
    assert one("USER app:app").args == ["app:app"]
    assert one("STOPSIGNAL SIGKILL").args == ["SIGKILL"]
    with pytest.raises(DockerfileError, match="WORKDIR requires exactly one argument"):
        one("WORKDIR")
    with pytest.raises(DockerfileError, match="STOPSIGNAL requires exactly one argument"):
        one("STOPSIGNAL A B")


def test_volume_and_expose() -> None:
    assert one('VOLUME ["/data", "/logs"]').args == ["/data", "/logs"]
    assert one("VOLUME /a /b").args == ["/a", "/b"]
    assert one("EXPOSE 80/tcp 53/udp").args == ["80/tcp", "53/udp"]
    with pytest.raises(DockerfileError, match="VOLUME specified can not be an empty string"):
        one('VOLUME [""]')


def test_healthcheck() -> None:
    h = one("HEALTHCHECK --interval=30s --timeout=1m30s --start-period=500ms --retries=3 CMD curl -f http://x/ || exit 1")
    assert h.health == {
        "Test": ["CMD-SHELL", "curl -f http://x/ || exit 1"],
        "Interval": 30_000_000_000, "Timeout": 90_000_000_000, "StartPeriod": 500_000_000, "Retries": 3,
    }
    assert one('HEALTHCHECK CMD ["/bin/check", "-v"]').health == {"Test": ["CMD", "/bin/check", "-v"]}
    assert one("HEALTHCHECK NONE").health == {"Test": ["NONE"]}
    with pytest.raises(DockerfileError, match="HEALTHCHECK NONE takes no arguments"):
        one("HEALTHCHECK NONE x")
    with pytest.raises(DockerfileError, match=r'Unknown type "FOO" in HEALTHCHECK \(try CMD\)'):
        one("HEALTHCHECK FOO x")
    with pytest.raises(DockerfileError, match="Missing command after HEALTHCHECK CMD"):
        one("HEALTHCHECK CMD")
    with pytest.raises(DockerfileError, match="cannot be less than 1ms"):
        one("HEALTHCHECK --interval=1us CMD x")
    with pytest.raises(DockerfileError, match="--retries cannot be negative"):
        one("HEALTHCHECK --retries=-1 CMD x")
    with pytest.raises(DockerfileError, match="unknown flag: intervl"):
        one("HEALTHCHECK --intervl=1s CMD x")


def test_go_durations() -> None:
    assert parse_go_duration("1h2m3.5s") == 3_723_500_000_000
    assert parse_go_duration("0") == 0
    with pytest.raises(InvalidArgument, match="missing unit"):
        parse_go_duration("10")


def test_onbuild() -> None:
    o = one("ONBUILD RUN echo hi")
    assert o.trigger is not None and o.trigger.cmd == "RUN" and o.trigger.args == ["echo hi"]
    assert o.trigger_text == "RUN echo hi"
    o = one("onbuild   COPY --chown=1 . /app")
    assert o.trigger_text == "COPY --chown=1 . /app"
    assert o.trigger.flags == {"chown": "1"}
    with pytest.raises(DockerfileError, match="Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"):
        one("ONBUILD ONBUILD RUN x")
    with pytest.raises(DockerfileError, match="FROM isn't allowed as an ONBUILD trigger"):
        one("ONBUILD FROM x")
    with pytest.raises(DockerfileError, match="unknown instruction: RUNN"):
        one("ONBUILD RUNN x")


def test_heredocs() -> None:
    df = parse(
        "FROM scratch\n"
        "RUN <<EOF\necho hi\necho there\nEOF\n"
        "RUN <<-EOT bash\n\techo tab\n\tEOT\n"
        "COPY <<'A' <<B /x/\n$X\nA\nb $Y\nB\n"
        'RUN ["cat", "<<EOF"]\n'
        "RUN python3 <<PY > /out\nprint(1)\nPY\n"
    )
    r1, r2, c, r3, r4 = df.stages[0].instructions
    assert r1.args == ["<<EOF"] and r1.heredocs[0].content == "echo hi\necho there\n"
    assert (r1.line, r1.end_line) == (2, 5)
    assert r2.heredocs[0].chomp and r2.heredocs[0].data == "echo tab\n"
    assert [(h.name, h.content, h.expand) for h in c.heredocs] == [("A", "$X\n", False), ("B", "b $Y\n", True)]
    assert r3.json and r3.heredocs == []
    assert r4.args == ["python3 <<PY > /out"] and r4.heredocs[0].content == "print(1)\n"
    assert r4.line == 15


def test_unterminated_heredoc() -> None:
    with pytest.raises(DockerfileError, match=r"Dockerfile:2: unterminated heredoc EOF"):
        parse("FROM scratch\nRUN <<EOF\necho\n")


def test_instruction_before_from_and_meta_args() -> None:
    with pytest.raises(DockerfileError, match=r"^Dockerfile:2: no build stage in current context$"):
        parse("ARG A\nENV X=1\nFROM scratch\n")


def test_parse_words_keeps_quotes() -> None:
    assert parse_words("a='b c' d\\ e \"f\"", "\\") == ["a='b c'", "d\\ e", '"f"']


def test_crlf_line_endings() -> None:
    df = parse("FROM busybox\r\nRUN echo a \\\r\n b\r\n")
    assert df.stages[0].instructions[0].args == ["echo a  b"]
