# ruff: noqa: F811
"""LazyImages: the image store read without msgspec gives what ImageService gives, and hands
everything else to the real service."""

from __future__ import annotations

import pytest
from build_fixtures import BuildEnv, busybox_root, env  # noqa: F401

from tugboat.build.lazyimages import LazyImages
from tugboat.errors import NotFound


def test_lite_reads_agree_with_the_image_service(env: BuildEnv) -> None:
    real = env.images.resolve("busybox")
    lazy = LazyImages(env.root)
    for ref in ("busybox", "busybox:latest", "docker.io/library/busybox:latest", real.id):
        img = lazy.resolve(ref)
        assert (img.id, img.config, img.manifest, img.layers) == (real.id, real.config, real.manifest, real.layers)
    assert not lazy.loaded  # none of these needed the real service
    assert lazy.content.exists(real.manifest["layers"][0]["digest"])
    assert not lazy.content.exists("sha256:" + "0" * 64)


def test_everything_else_goes_to_the_real_service(env: BuildEnv) -> None:
    real = env.images.resolve("busybox")
    lazy = LazyImages(env.root)
    with pytest.raises(NotFound):
        lazy.resolve("no-such-image:1")
    assert lazy.loaded
    lazy2 = LazyImages(env.root)
    assert lazy2.resolve(real.id[7:19]).id == real.id  # a short ID: the real resolver
    lazy3 = LazyImages(env.root)
    digest = lazy3.content.put(b"written through the lazy view")  # not a lite method: delegated
    assert lazy3.loaded and env.images.content.exists(digest)
    with lazy3.lease():
        assert lazy3.exists("busybox")
