"""Queue places shared between clients: the policy as a pure function, and through the real server a batch on one
WebSocket that filled the queue gives up its newest place to another client's request."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from support.images import data_uri
from support.servers import LiveServer, ModelHold, caption_task, post, wait_until
from websockets.sync.client import connect

from llava_edge.server.queue_places import Place, place_for


@dataclass(frozen=True)
class Waiting:
    client: str
    admitted: float


def test_a_class_with_room_admits_everyone_and_a_lone_client_may_fill_it() -> None:
    assert place_for([Waiting("batch", 1.0)], "batch", 2).admitted
    full = [Waiting("batch", 1.0), Waiting("batch", 2.0)]
    assert place_for(full, "batch", 2) == Place(False)


def test_a_full_class_takes_the_newest_place_of_the_client_holding_the_most() -> None:
    waiting = [Waiting("batch", 1.0), Waiting("batch", 3.0), Waiting("person", 2.0), Waiting("batch", 4.0)]
    place = place_for(waiting, "newcomer", 4)
    assert place.admitted and place.pushed_out == waiting[3]


def test_places_even_out_but_never_swap_back_and_forth() -> None:
    even = [Waiting("a", 1.0), Waiting("a", 2.0), Waiting("b", 3.0)]
    assert not place_for(even, "b", 3).admitted  # a holds only one more than b: b waits its turn
    assert place_for(even, "c", 3).pushed_out == even[1]


def test_one_connection_that_filled_the_queue_gives_a_place_to_another_client(
    serve: Callable[..., LiveServer], make_image: Callable[..., bytes],
) -> None:
    server = serve(max_queue=2)
    png = data_uri(make_image(20, 20))
    hold = ModelHold(server)
    assert post(server, [caption_task(png, deliveryMethod="async")]).status_code == 200  # runs, holding the model
    wait_until(lambda: server.service.health()["running"])
    answers: dict[str, Any] = {}
    with connect(server.ws, open_timeout=10) as batch:
        batch.send(json.dumps([{"taskType": "authentication", "apiKey": "k"}]))
        batch.recv(timeout=10)
        first, second, person = caption_task(png), caption_task(png), caption_task(png)
        batch.send(json.dumps([first, second]))
        wait_until(lambda: server.service.health()["queueDepths"]["interactive"] == 2)
        other_client = threading.Thread(target=lambda: answers.update(person=post(server, [person]).json()))
        other_client.start()
        pushed_out = json.loads(batch.recv(timeout=30))
        assert pushed_out["errors"][0]["code"] == "serviceUnavailable"
        assert pushed_out["errors"][0]["taskUUID"] == second["taskUUID"]
        hold.release()
        answers["first"] = json.loads(batch.recv(timeout=30))
        other_client.join(30)
    assert answers["first"]["data"][0]["taskUUID"] == first["taskUUID"]
    assert answers["person"]["data"][0]["taskUUID"] == person["taskUUID"]
