"""imageUpload stores by content: the same image uploaded again is the same imageUUID and the same file."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from support.images import data_uri
from support.servers import LiveServer, caption_task, post

from llava_edge import Captioner
from llava_edge.image_store import content_uuid


def test_uploading_the_same_image_twice_stores_one_file(
    serve: Callable[..., LiveServer], captioner: Captioner, make_image: Callable[..., bytes]
) -> None:
    server = serve()
    picture = make_image(41, 17)  # a size no other test uploads
    root = captioner.image_store.root
    before = set(root.iterdir()) if root.exists() else set()
    items = []
    for _ in range(3):
        upload = {"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()), "image": data_uri(picture)}
        response = post(server, [upload])
        assert response.status_code == 200, response.text
        items.append(response.json()["data"][0])
    assert {item["imageUUID"] for item in items} == {content_uuid(picture)}
    assert len({item["imageURL"] for item in items}) == 1
    created = set(root.iterdir()) - before
    assert [path.name for path in created] == [f"{content_uuid(picture)}.png"]
    assert next(iter(created)).read_bytes() == picture
    answer = post(server, [caption_task(items[0]["imageUUID"])]).json()
    assert answer["data"][0]["text"], answer
