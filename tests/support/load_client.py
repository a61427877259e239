"""Load generator for ``llava-edge serve``, run as its own process by ``tests/test_reliability_server.py``.

``python tests/support/load_client.py http://127.0.0.1:PORT --ws-clients 8 --rest-clients 4 --tasks 12``

Every client sends its caption tasks in small arrays (a third of them async), sends again with the same
taskUUID those refused with ``serviceUnavailable`` (after a short pause), polls the async ones with
``getResponse``, and records every answer by taskUUID. A thread GETs ``/health`` throughout and times it.
Bounded: a fixed number of tasks, a few resends each, and a hard deadline. Prints one JSON summary on
stdout; the test makes the assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import random
import statistics
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx
from PIL import Image
from websockets.asyncio.client import ClientConnection, connect

MAX_SENDS = 50
"""Times one task is sent at most (busy answers included) before the client gives up on it."""
BUSY_PAUSE_S = 0.2
"""Pause before sending again the tasks refused as busy."""


@dataclass
class Tally:
    """Everything the clients saw, by taskUUID."""

    sent: Counter[str] = field(default_factory=Counter)
    """Times each task was sent."""
    answered: Counter[str] = field(default_factory=Counter)
    """Answers to those sends (a result, an async acknowledgement or an error), by the taskUUID they carry."""
    results: defaultdict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    """Captions received per task: inline (sync) or from getResponse (async)."""
    busy: int = 0
    busy_codes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    """Error codes other than a busy refusal."""
    messages: dict[str, str] = field(default_factory=dict)
    """The first message seen for each of those codes."""
    unrouted: int = 0
    """Answers whose taskUUID was not among the tasks just sent (duplicates, strays)."""
    http_status: Counter[int] = field(default_factory=Counter)
    busy_without_retry_after: int = 0
    gave_up: list[str] = field(default_factory=list)

    def error(self, item: dict[str, Any]) -> None:
        code = str(item.get("code", "?"))
        self.errors[code] += 1
        self.messages.setdefault(code, str(item.get("message", ""))[:300])


def png_data_uri(width: int, height: int, seed: int) -> str:
    """Noise (it does not compress: a request really carries ``3 * width * height`` bytes of image), the
    same for the same seed, so runs with the same seeds send the same images."""
    image = Image.frombytes("RGB", (width, height), random.Random(seed).randbytes(3 * width * height))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def client_image(args: argparse.Namespace, n: int) -> str:
    return png_data_uri(args.image_width, args.image_width * 3 // 4, args.seed + n)


def caption_tasks(client: str, count: int, image: str) -> list[dict[str, Any]]:
    return [{"taskType": "caption", "taskUUID": str(uuid.uuid4()), "model": "runware:150@2", "maxTokens": 12,
             "prompt": f"{client} task {k}", "inputs": {"image": image},
             "deliveryMethod": "async" if k % 3 == 2 else "sync"} for k in range(count)]


class Exchange:
    """Sends one client's tasks in arrays and routes the answers: the transport (WS or REST) is ``send``."""

    def __init__(self, tally: Tally, deadline: float):
        self.tally = tally
        self.deadline = deadline

    async def send(self, tasks: list[dict[str, Any]]) -> list[tuple[dict[str, Any], bool]]:
        """Send ``tasks`` and answer ``(item, is_error)`` per answer received."""
        raise NotImplementedError

    async def run(self, tasks: list[dict[str, Any]], batch: int) -> None:
        for start in range(0, len(tasks), batch):
            acknowledged = await self._submit(tasks[start:start + batch])
            await self._poll(acknowledged)

    async def _submit(self, batch: list[dict[str, Any]]) -> list[str]:
        pending = {task["taskUUID"]: task for task in batch}
        acknowledged: list[str] = []
        while pending and time.monotonic() < self.deadline:
            sent_now = set(pending)
            for task_uuid in sent_now:
                self.tally.sent[task_uuid] += 1
            for item, is_error in await self.send(list(pending.values())):
                task_uuid = item.get("taskUUID")
                if task_uuid not in sent_now:
                    self.tally.unrouted += 1
                    continue
                self.tally.answered[task_uuid] += 1
                if task_uuid not in pending:  # a second answer to the same send
                    continue
                if is_error and item.get("code") == "serviceUnavailable":
                    self.tally.busy += 1
                    self.tally.busy_codes[item["code"]] += 1
                    if self.tally.sent[task_uuid] >= MAX_SENDS:
                        self.tally.gave_up.append(pending.pop(task_uuid)["taskUUID"])
                    continue
                pending.pop(task_uuid)
                if is_error:
                    self.tally.error(item)
                elif "text" in item:
                    self.tally.results[task_uuid].append(item["text"])
                else:
                    acknowledged.append(task_uuid)
            if pending:
                await asyncio.sleep(BUSY_PAUSE_S)
        return acknowledged

    async def _poll(self, task_uuids: list[str]) -> None:
        waiting = set(task_uuids)
        while waiting and time.monotonic() < self.deadline:
            polls = [{"taskType": "getResponse", "taskUUID": task_uuid} for task_uuid in sorted(waiting)]
            for item, is_error in await self.send(polls):
                if item.get("status") == "success":
                    self.tally.results[item["taskUUID"]].append(item["text"])
                elif is_error:
                    self.tally.error(item)
                if item.get("status") != "processing":
                    waiting.discard(item.get("taskUUID", ""))
            if waiting:
                await asyncio.sleep(0.1)


class WebSocketExchange(Exchange):
    """One authenticated WebSocket: every task is answered in its own frame."""

    def __init__(self, socket: ClientConnection, tally: Tally, deadline: float):
        super().__init__(tally, deadline)
        self.socket = socket

    async def send(self, tasks: list[dict[str, Any]]) -> list[tuple[dict[str, Any], bool]]:
        await self.socket.send(json.dumps(tasks))
        answers = []
        for _ in tasks:
            frame = json.loads(await asyncio.wait_for(self.socket.recv(), max(0.1, self.deadline - time.monotonic())))
            answers.append((frame["errors"][0], True) if "errors" in frame else (frame["data"][0], False))
        return answers


class RestExchange(Exchange):
    """``POST /v1`` with the whole array: one response holds every answer."""

    def __init__(self, http: httpx.AsyncClient, url: str, tally: Tally, deadline: float):
        super().__init__(tally, deadline)
        self.http = http
        self.url = url

    async def send(self, tasks: list[dict[str, Any]]) -> list[tuple[dict[str, Any], bool]]:
        response = await self.http.post(self.url, json=tasks)
        self.tally.http_status[response.status_code] += 1
        if response.status_code == 503 and "retry-after" not in response.headers:
            self.tally.busy_without_retry_after += 1
        body = response.json()
        return [(item, False) for item in body.get("data", [])] + [(item, True) for item in body.get("errors", [])]


async def ws_client(url: str, key: str, n: int, args: argparse.Namespace, tally: Tally, deadline: float) -> None:
    async with connect(url, max_size=None, open_timeout=10, ping_interval=None) as socket:
        await socket.send(json.dumps([{"taskType": "authentication", "apiKey": key}]))
        reply = json.loads(await asyncio.wait_for(socket.recv(), 10))
        assert reply["data"][0]["taskType"] == "authentication", reply
        tasks = caption_tasks(f"ws{n}", args.tasks, client_image(args, n))
        await WebSocketExchange(socket, tally, deadline).run(tasks, args.batch)
        try:  # nothing else may arrive: a late duplicate answer would show up here
            await asyncio.wait_for(socket.recv(), 0.3)
            tally.unrouted += 1
        except TimeoutError:
            pass


async def rest_client(url: str, key: str, n: int, args: argparse.Namespace, tally: Tally, deadline: float) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        tasks = caption_tasks(f"rest{n}", args.tasks, client_image(args, args.ws_clients + n))
        await RestExchange(http, url, tally, deadline).run(tasks, args.batch)


def probe_health(url: str, stop: threading.Event, timeout: float, samples: list[dict[str, Any]]) -> None:
    """GET /health every 50 ms until ``stop``: latency, queue depth and limit, or the failure."""
    with httpx.Client(timeout=timeout) as http:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                body = http.get(url).raise_for_status().json()
                samples.append({"ms": (time.perf_counter() - started) * 1000, "depth": body["queueDepth"],
                                "limit": body["queueLimit"]})
            except (httpx.HTTPError, ValueError, KeyError) as err:
                samples.append({"ms": None, "error": f"{type(err).__name__}: {err}"})
            stop.wait(0.05)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def summary(tally: Tally, samples: list[dict[str, Any]], elapsed: float, timed_out: bool) -> dict[str, Any]:
    latencies = [sample["ms"] for sample in samples if sample["ms"] is not None]
    completed = sum(1 for texts in tally.results.values() if texts)
    return {
        "tasks": len(tally.sent), "sends": sum(tally.sent.values()), "elapsed_s": round(elapsed, 2),
        "completed": completed, "tasks_per_s": round(completed / elapsed, 1), "timed_out": timed_out,
        "busy": tally.busy, "busy_codes": dict(tally.busy_codes), "errors": dict(tally.errors),
        "error_messages": tally.messages,
        "http_status": {str(code): count for code, count in tally.http_status.items()},
        "busy_without_retry_after": tally.busy_without_retry_after, "gave_up": tally.gave_up,
        "unanswered_sends": sorted(u for u in tally.sent if tally.answered[u] < tally.sent[u]),
        "extra_answers": sorted(u for u in tally.answered if tally.answered[u] > tally.sent[u]),
        "unrouted": tally.unrouted,
        "without_result": sorted(u for u in tally.sent if not tally.results.get(u)),
        "several_results": sorted(u for u, texts in tally.results.items() if len(texts) > 1),
        "health": {
            "samples": len(samples), "failures": len(samples) - len(latencies),
            "failure_kinds": sorted({sample["error"] for sample in samples if "error" in sample})[:5],
            "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
            "p95_ms": round(percentile(latencies, 0.95), 1), "p99_ms": round(percentile(latencies, 0.99), 1),
            "max_ms": round(max(latencies), 1) if latencies else None,
            "max_queue_depth": max((sample["depth"] for sample in samples if "depth" in sample), default=None),
            "queue_limit": next((sample["limit"] for sample in samples if "limit" in sample), None),
        },
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    root = args.url.rstrip("/")
    ws_url = root.replace("http://", "ws://", 1) + "/v1"
    tally, samples, stop = Tally(), [], threading.Event()
    prober = threading.Thread(target=probe_health, args=(f"{root}/health", stop, args.health_timeout, samples))
    prober.start()
    started = time.monotonic()
    deadline = started + args.deadline
    clients = [ws_client(ws_url, args.key, n, args, tally, deadline) for n in range(args.ws_clients)]
    clients += [rest_client(f"{root}/v1", args.key, n, args, tally, deadline) for n in range(args.rest_clients)]
    timed_out = False
    try:
        await asyncio.wait_for(asyncio.gather(*clients), args.deadline + 5)
    except TimeoutError:
        timed_out = True
    finally:
        stop.set()
        prober.join(args.health_timeout + 1)
    return summary(tally, samples, time.monotonic() - started, timed_out or time.monotonic() > deadline)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="The server's root, e.g. http://127.0.0.1:8765")
    parser.add_argument("--key", default="load-test")
    parser.add_argument("--ws-clients", type=int, default=8)
    parser.add_argument("--rest-clients", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=12, help="Caption tasks per client.")
    parser.add_argument("--batch", type=int, default=4, help="Tasks per array.")
    parser.add_argument("--image-width", type=int, default=200, help="Width of each client's noise PNG (4:3).")
    parser.add_argument("--seed", type=int, default=0, help="Client n sends the noise image of seed + n.")
    parser.add_argument("--deadline", type=float, default=60, help="Seconds for the whole run.")
    parser.add_argument("--health-timeout", type=float, default=10, help="Liveness timeout of one /health GET.")
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse_args()))))
