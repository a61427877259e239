"""Caption with the legacy ``runware`` 0.5.24 SDK, unchanged, against a URL given on the command line.

Runs in its own venv (the two Runware SDKs share the import name). Prints one JSON object per mode:
``{"mode", "taskType", "taskUUID", "text", "cost"}`` or ``{"mode", "error", "message"}``.

Usage: python legacy_runware.py WS_URL API_KEY IMAGE_PATH PROMPT MODE [MODE ...]
Modes: ``upload`` (a local file: the SDK sends imageUpload first), ``datauri`` (a data URI input).
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys

from runware import IImageCaption, Runware


async def caption(url: str, api_key: str, image: str, prompt: str) -> dict[str, object]:
    client = Runware(api_key=api_key, url=url)
    await client.connect()
    try:
        request = IImageCaption(inputImage=image, model="runware:150@2", prompt=prompt, includeCost=True)
        result = await client.imageCaption(requestImageToText=request)
    finally:
        await client.disconnect()
    task_type = getattr(result.taskType, "value", result.taskType)
    return {"taskType": task_type, "taskUUID": result.taskUUID, "text": result.text, "cost": result.cost}


def image_for(mode: str, path: str) -> str:
    if mode == "datauri":
        with open(path, "rb") as handle:
            return "data:image/png;base64," + base64.b64encode(handle.read()).decode()
    return path


async def main(url: str, api_key: str, path: str, prompt: str, modes: list[str]) -> None:
    for mode in modes:
        try:
            answer = {"mode": mode, **await asyncio.wait_for(caption(url, api_key, image_for(mode, path), prompt), 60)}
        except Exception as err:
            answer = {"mode": mode, "error": type(err).__name__, "message": str(err)}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]))
