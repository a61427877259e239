"""Caption with the new ``runware-sdk`` 1.8.0, unchanged, against URLs given on the command line.

Runs in its own venv (the two Runware SDKs share the import name). ``taskType`` is passed explicitly
and ``validate`` stays off, so the SDK never contacts schemas.runware.ai. Prints one JSON object per
mode: ``{"mode", "items": [...]}`` or ``{"mode", "error", "code", "message", "taskType", "taskUUID"}``.

Usage: python runware_sdk.py HTTP_ROOT API_KEY IMAGE_PATH PROMPT MODE [MODE ...]
Modes: ``<transport>-<delivery>`` with transport ``ws`` | ``rest`` and delivery ``default`` (the SDK's
own default, async) | ``sync``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from typing import Any

from runware import Runware, file_to_data_uri


def client_for(transport: str, root: str, api_key: str) -> Runware:
    """A client as written for the Runware cloud, with only the URL changed."""
    if transport == "rest":
        return Runware(api_key=api_key, transport="rest", http_base_url=f"{root}/v1")
    return Runware(api_key=api_key, ws_base_url=root.replace("http://", "ws://", 1) + "/v1")


async def caption(mode: str, root: str, api_key: str, path: str, prompt: str) -> dict[str, Any]:
    transport, delivery = mode.split("-", 1)
    task: dict[str, Any] = {
        "taskType": "caption", "taskUUID": str(uuid.uuid4()), "model": "runware:150@2", "prompt": prompt,
        "inputs": {"image": file_to_data_uri(path)}, "includeCost": True,
    }
    if delivery == "sync":
        task["deliveryMethod"] = "sync"
    async with client_for(transport, root, api_key) as client:
        items = await client.run(task)
    return {"sentTaskUUID": task["taskUUID"], "items": items}


async def main(root: str, api_key: str, path: str, prompt: str, modes: list[str]) -> None:
    for mode in modes:
        try:
            answer = {"mode": mode, **await asyncio.wait_for(caption(mode, root, api_key, path, prompt), 60)}
        except Exception as err:
            answer = {"mode": mode, "error": type(err).__name__, "message": str(err),
                      **{key: str(getattr(err, attr, None)) for key, attr in
                         (("code", "code"), ("taskType", "task_type"), ("taskUUID", "task_uuid"))}}
        print(json.dumps(answer, default=str), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]))
