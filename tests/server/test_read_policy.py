"""The fetch slots' policy, as a pure function: slots are granted round-robin between clients, and only network
fetches take one."""

from __future__ import annotations

from dataclasses import dataclass

from llava_edge.server.read_policy import client_key, needs_fetch_slot, next_fetch


@dataclass(frozen=True)
class Waiting:
    client: str
    order: int


def test_a_freed_slot_goes_to_the_client_served_least_recently() -> None:
    many = [Waiting("a", order) for order in range(8)]
    late = Waiting("b", 8)

    assert next_fetch([*many, late], {"a": 3}) == late  # b was never served: it goes before a's backlog
    assert next_fetch([*many, late], {"a": 3, "b": 4}) == many[0]  # then a again, in a's own arrival order
    assert next_fetch([], {}) is None


def test_clients_take_turns_in_grant_order() -> None:
    waiting = [Waiting("a", 0), Waiting("a", 1), Waiting("a", 2), Waiting("b", 3), Waiting("c", 4), Waiting("b", 5)]
    served: dict[str, int] = {}
    order = []
    for stamp in range(len(waiting)):
        chosen = next_fetch(waiting, served)
        assert chosen is not None
        waiting.remove(chosen)
        served[chosen.client] = stamp
        order.append(chosen.client)

    assert order == ["a", "b", "c", "a", "b", "a"]


def test_only_other_hosts_urls_take_a_slot() -> None:
    base = "http://127.0.0.1:8765/"
    own = "http://127.0.0.1:8765/images/0b8e6a47-2f4f-4c3e-9d3a-1d0c5f1e2a3b.png"

    assert needs_fetch_slot("https://example.com/a.png", base) and needs_fetch_slot(" HTTP://example.com/a", base)
    assert not needs_fetch_slot(own, base)
    assert not needs_fetch_slot("data:image/png;base64,iVBORw0KGgo=", base)
    assert not needs_fetch_slot("iVBORw0KGgo=", base)
    assert not needs_fetch_slot("0b8e6a47-2f4f-4c3e-9d3a-1d0c5f1e2a3b", base)


def test_a_client_is_its_connection_then_its_key_then_its_address() -> None:
    assert client_key(connection="c1", api_key="k", address="10.0.0.1") == "ws:c1"
    assert client_key(api_key="secret-key", address="10.0.0.1").startswith("key:")
    assert "secret-key" not in client_key(api_key="secret-key")
    assert client_key(address="10.0.0.1") == "addr:10.0.0.1"
