"""The build plan: stage selection, ARG/ENV scoping, and the image config each instruction produces."""

from __future__ import annotations

import pytest

from tugboat.build.dockerfile import parse
from tugboat.build.plan import (
    ArgTracker,
    BuildOptions,
    StageState,
    empty_image_config,
    onbuild_triggers,
    parse_exposed_ports,
    platform_args,
    stages_to_build,
)
from tugboat.errors import InvalidArgument

PLAT = platform_args("linux", "amd64")


def run_stage(text: str, build_args: dict[str, str] | None = None, base: dict | None = None,
              stage: int = -1) -> tuple[StageState, ArgTracker, list[str]]:
    df = parse(text)
    tracker = ArgTracker(df, BuildOptions(build_args=build_args or {}, platform=PLAT))
    st = StageState(base or empty_image_config(PLAT), tracker)
    texts = []
    for ins in df.stages[stage].instructions:
        if ins.cmd in ("RUN", "COPY", "ADD"):
            texts.append(ins.cmd)
            continue
        texts.append(st.apply(ins))
    return st, tracker, texts


def test_scratch_config_has_default_path() -> None:
    cfg = empty_image_config(PLAT)
    assert cfg["config"]["Env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    assert cfg["architecture"] == "amd64" and cfg["os"] == "linux"


def test_env_expansion_uses_state_before_the_instruction() -> None:
    st, _, _ = run_stage("FROM scratch\nENV abc=hello\nENV abc=bye def=$abc\nENV ghi=$abc\n")
    env = st.env
    assert (env["abc"], env["def"], env["ghi"]) == ("bye", "hello", "bye")


def test_env_quotes_and_old_form() -> None:
    st, _, texts = run_stage('FROM scratch\nENV A="a b" B=c\\ d C=\'$X\'\nENV D value with spaces\n')
    env = st.env
    assert env["A"] == "a b" and env["B"] == "c d" and env["C"] == "$X" and env["D"] == "value with spaces"
    assert texts[0] == "ENV A=a b B=c d C=$X"


def test_global_args_only_in_from_unless_redeclared() -> None:
    text = "ARG V=1\nARG W\nFROM busybox:$V\nRUN x\nARG V\nARG W=def\nENV X=$V Y=$W\n"
    df = parse(text)
    tracker = ArgTracker(df, BuildOptions(build_args={"W": "cli"}, platform=PLAT))
    assert tracker.base_of(df.stages[0]) == "busybox:1"
    st = StageState(empty_image_config(PLAT), tracker)
    assert st.expansion_env().get("V") is None
    for ins in df.stages[0].instructions:
        if ins.cmd != "RUN":
            st.apply(ins)
    assert st.env["X"] == "1" and st.env["Y"] == "cli"
    assert tracker.unconsumed() == []


def test_build_arg_overrides_default_and_unconsumed_are_reported() -> None:
    st, tracker, texts = run_stage("FROM scratch\nARG A=def B=$A\nENV V=$A-$B\n",
                                   build_args={"A": "x", "NOPE": "1", "HTTP_PROXY": "http://p"})
    assert st.env["V"] == "x-"  # B's default is expanded before A is set in this instruction
    assert texts[0] == "ARG A=x B="
    assert tracker.unconsumed() == ["NOPE"]


def test_env_wins_over_arg_and_args_are_not_in_config() -> None:
    st, _, _ = run_stage("FROM scratch\nARG A=arg\nENV A=env\nARG B=b\n", build_args={"A": "cli"})
    assert st.expansion_env()["A"] == "env"
    assert "B=b" not in st.cfg["Env"]
    assert st.run_args() == {"B": "b"}
    assert "B=b" in st.run_env()


def test_proxy_args_reach_run_but_not_cache_or_history() -> None:
    st, _, _ = run_stage("FROM scratch\nARG X=1\n", build_args={"http_proxy": "http://p:3128"})
    assert "http_proxy=http://p:3128" in st.run_env()
    assert st.cache_args() == ["X=1"]
    assert st.run_created_by(["/bin/sh", "-c", "echo"]) == "RUN |1 X=1 /bin/sh -c echo"


def test_platform_args_automatic_in_global_scope_and_when_declared() -> None:
    df = parse("FROM --platform=$BUILDPLATFORM busybox:$TARGETARCH\nARG TARGETOS\nENV OS=$TARGETOS\n")
    tracker = ArgTracker(df, BuildOptions(platform=PLAT))
    assert tracker.base_of(df.stages[0]) == "busybox:amd64"
    assert tracker.platform_of(df.stages[0]) == "linux/amd64"
    st, _, _ = run_stage("FROM scratch\nARG TARGETOS\nENV OS=$TARGETOS ARCH=$TARGETARCH\n")
    assert st.env["OS"] == "linux" and st.env["ARCH"] == ""


def test_workdir_user_expose_volume_stopsignal_labels() -> None:
    st, _, _ = run_stage(
        "FROM scratch\nENV D=/srv P=8080\nWORKDIR $D\nWORKDIR app/../web\nUSER ${U:-app}:app\n"
        "EXPOSE $P 53/udp 7000-7001\nVOLUME /data ${D}/logs\nVOLUME [\"/x\"]\nSTOPSIGNAL SIGQUIT\n"
        'LABEL a=1 "b c"="d e" $D=x\n'
    )
    cfg = st.cfg
    assert cfg["WorkingDir"] == "/srv/web"
    assert cfg["User"] == "app:app"
    assert cfg["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}, "7000/tcp": {}, "7001/tcp": {}}
    assert cfg["Volumes"] == {"/data": {}, "/srv/logs": {}, "/x": {}}
    assert cfg["StopSignal"] == "SIGQUIT"
    assert cfg["Labels"] == {"a": "1", "b c": "d e", "/srv": "x"}


def test_cmd_entrypoint_shell_rules() -> None:
    base = empty_image_config(PLAT)
    base["config"]["Cmd"] = ["base-cmd"]
    st, _, _ = run_stage("FROM scratch\nENTRYPOINT [\"/app\"]\n", base=base)
    assert st.cfg["Entrypoint"] == ["/app"] and st.cfg["Cmd"] is None
    st, _, _ = run_stage("FROM scratch\nCMD [\"x\"]\nENTRYPOINT /app run\n", base=base)
    assert st.cfg["Entrypoint"] == ["/bin/sh", "-c", "/app run"] and st.cfg["Cmd"] == ["x"]
    st, _, _ = run_stage('FROM scratch\nSHELL ["/bin/bash", "-eo", "pipefail", "-c"]\nCMD echo $HOME\n')
    assert st.cfg["Cmd"] == ["/bin/bash", "-eo", "pipefail", "-c", "echo $HOME"]
    assert st.cfg["Shell"] == ["/bin/bash", "-eo", "pipefail", "-c"]


def test_healthcheck_onbuild_maintainer() -> None:
    st, _, _ = run_stage(
        "FROM scratch\nHEALTHCHECK --interval=5s CMD true\nONBUILD RUN echo hi\nONBUILD COPY . /app\nMAINTAINER me\n"
    )
    assert st.cfg["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000}
    assert st.cfg["OnBuild"] == ["RUN echo hi", "COPY . /app"]
    assert st.image["author"] == "me"
    trig = onbuild_triggers(st.image, "Dockerfile")
    assert [t.cmd for t in trig] == ["RUN", "COPY"]


def test_errors_carry_line_numbers() -> None:
    with pytest.raises(InvalidArgument, match=r"^Dockerfile:3: invalid proto: xyz$"):
        run_stage("FROM scratch\nENV A=1\nEXPOSE 80/xyz\n")
    with pytest.raises(InvalidArgument, match=r"^Dockerfile:2: Invalid signal: SIGNOPE$"):
        run_stage("FROM scratch\nSTOPSIGNAL SIGNOPE\n")
    with pytest.raises(InvalidArgument, match=r"^Dockerfile:2: failed to process .*missing '}'"):
        run_stage("FROM scratch\nENV A=${B\n")


def test_exposed_port_specs() -> None:
    assert parse_exposed_ports("80") == ["80/tcp"]
    assert parse_exposed_ports("53/UDP") == ["53/udp"]
    with pytest.raises(InvalidArgument):
        parse_exposed_ports("70000")
    with pytest.raises(InvalidArgument):
        parse_exposed_ports("1.2.3.4:80:80")


def test_stages_to_build_follows_dependencies_and_target() -> None:
    text = (
        "ARG BASE=base\n"
        "FROM busybox AS base\n"
        "FROM busybox AS unused\n"
        "FROM ${BASE} AS builder\nCOPY --from=0 /a /a\n"
        "FROM scratch AS other\nRUN --mount=type=bind,from=unused,target=/x true\n"
        "FROM scratch\nCOPY --from=builder /a /a\n"
    )
    df = parse(text)
    tracker = ArgTracker(df, BuildOptions(platform=PLAT))
    assert stages_to_build(df, tracker, None) == [0, 2, 4]
    assert stages_to_build(df, tracker, "other") == [1, 3]
    with pytest.raises(InvalidArgument, match="failed to reach build target nope in Dockerfile"):
        stages_to_build(df, tracker, "nope")


def test_copy_from_future_stage_is_an_error() -> None:
    df = parse("FROM scratch\nCOPY --from=1 /a /a\nFROM scratch\n")
    tracker = ArgTracker(df, BuildOptions(platform=PLAT))
    with pytest.raises(InvalidArgument, match="Dockerfile:2: invalid from flag value 1"):
        stages_to_build(df, tracker, None)
