"""Builder progress events -> dockerd's legacy build stream messages."""

from __future__ import annotations

from tugboat.api.build import _json_map, _LegacyStream


def test_legacy_stream_messages() -> None:
    conv = _LegacyStream()
    msgs = []
    for ev in [
        {"type": "step", "n": 1, "total": 3, "text": "FROM busybox", "stage": "s"},
        {"type": "step-done", "n": 1, "id": "sha256:" + "a" * 64, "stage": "s"},
        {"type": "step", "n": 2, "total": 3, "text": "RUN echo hi", "stage": "s"},
        {"type": "output", "n": 2, "text": "hi\n", "stage": "s"},
        {"type": "step-done", "n": 2, "id": "sha256:" + "b" * 64, "stage": "s"},
        {"type": "step", "n": 3, "total": 3, "text": "COPY a /a", "stage": "s"},
        {"type": "cached", "n": 3, "stage": "s"},
        {"type": "step-done", "n": 3, "id": "sha256:" + "c" * 64, "stage": "s"},
    ]:
        msgs.extend(conv.convert(ev))
    texts = [m["stream"] for m in msgs]
    assert texts[0] == "Step 1/3 : FROM busybox\n"
    assert texts[1] == " ---> aaaaaaaaaaaa\n"
    assert texts[2] == "Step 2/3 : RUN echo hi\n"
    assert texts[3].startswith(" ---> Running in ") and len(texts[3]) == len(" ---> Running in \n") + 12
    cid = texts[3].split()[-1]
    assert texts[4] == "hi\n"
    assert texts[5] == f" ---> Removed intermediate container {cid}\n"
    assert texts[6] == " ---> bbbbbbbbbbbb\n"
    assert texts[7:] == ["Step 3/3 : COPY a /a\n", " ---> Using cache\n", " ---> cccccccccccc\n"]


def test_query_maps() -> None:
    assert _json_map('{"FOO": "bar", "NULL": null}', "buildargs") == {"FOO": "bar"}
    assert _json_map(None, "labels") == {}
