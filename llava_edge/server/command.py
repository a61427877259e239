"""The ``llava-edge serve`` command (added to the CLI group by ``llava_edge.cli``). The server's modules load only
when it runs, so the other commands work without the ``server`` extra."""

from __future__ import annotations

from typing import Any

import click

from llava_edge.command_options import ModelLoad, runtime_options


@click.command("serve")
@click.option("--host", default=None,
              help="Address to bind (default 127.0.0.1). Anything but loopback needs an --api-key of 16+ "
                   "characters, or --no-auth.")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port (default 8765).")
@click.option("--api-key", envvar="LLAVA_EDGE_API_KEY", default=None,
              help="Key clients must send (env LLAVA_EDGE_API_KEY). Without one, any key is accepted.")
@click.option("--max-queue", type=click.IntRange(1), default=None,
              help="Caption tasks waiting at most per priority class, interactive and background (default 32); "
              "more are answered serviceUnavailable.")
@click.option("--result-ttl", type=click.IntRange(1), default=None,
              help="Seconds results stay available to getResponse when a task sets no ttl (default 3600).")
@click.option("--allow-fetch-host", "fetch_hosts", metavar="HOST", multiple=True,
              help="A host that image URLs, webhookURL and uploadEndpoint may name, even if its address is "
                   "private; repeat for more (default: any host with a public address).")
@click.option("--no-fetch", is_flag=True,
              help="Contact no host for a request: image URLs, webhooks and uploadEndpoint are all refused.")
@click.option("--allow-private-fetch", is_flag=True,
              help="Let requests make the server contact loopback, private, link-local and other non-public "
                   "addresses (refused by default).")
@click.option("--shutdown-timeout", type=click.FloatRange(0), default=None,
              help="On SIGTERM or Ctrl-C, seconds accepted captions get to finish (default 20); then 5 s for "
                   "pending webhooks.")
@click.option("--no-auth", is_flag=True,
              help="Serve a non-loopback address without a key, for clients that cannot send one (warned).")
@click.option("--allow-origin", "origins", metavar="ORIGIN", multiple=True,
              help="A web page origin (https://app.example:8443) that may call the server from a browser; "
                   "repeat for more. Other pages are refused.")
@click.option("--prefix-cache-mb", type=click.IntRange(0), default=1024, show_default=True,
              help="Memory for image prefixes kept between requests, so clients that interleave still get fast "
                   "follow-up answers (about 360 MB per 672x672 image on the 7B model; 0 keeps only the last).")
@click.option("--allow-host", "host_names", metavar="NAME", multiple=True,
              help="A Host name clients may use besides IP addresses and localhost (DNS-rebinding defence).")
@click.option("--no-swap", is_flag=True,
              help="Pin the start model: a request naming another installed model is refused instead of swapping "
                   "it in (by default it is swapped in once the loaded one has not been asked for in 30 s).")
@click.option("--keep-alive", metavar="DURATION", default="5m", show_default=True,
              help="How long the model stays loaded after an answer when the request says nothing (seconds or a "
                   "duration such as 10m or 1h30m); 0 unloads it after each answer, -1 never. The next request "
                   "loads it again.")
@click.option("--max-keep-alive", metavar="DURATION", default=None,
              help="The most a request's own keep_alive may keep the model loaded (default: no cap).")
@click.option("--allow-pull", is_flag=True,
              help="Let clients download models through /api/pull on a non-loopback bind without a key.")
@runtime_options
def serve_command(host: str | None, port: int | None, api_key: str | None, max_queue: int | None,
                  result_ttl: int | None, fetch_hosts: tuple[str, ...], no_fetch: bool, allow_private_fetch: bool,
                  shutdown_timeout: float | None, no_auth: bool, origins: tuple[str, ...],
                  host_names: tuple[str, ...], prefix_cache_mb: int, no_swap: bool, keep_alive: str,
                  max_keep_alive: str | None, allow_pull: bool, load: ModelLoad) -> None:
    """Serve the Runware API (REST and WebSocket at /v1) so the official Runware SDKs caption on this device."""
    from llava_edge.server.settings import ServerSettings, normalise_host

    if no_fetch and fetch_hosts:
        raise click.UsageError("--no-fetch forbids every host; leave out --allow-fetch-host.")
    allowed_hosts = frozenset() if no_fetch else frozenset(map(normalise_host, fetch_hosts)) or None
    given: dict[str, Any] = {"host": host, "port": port, "api_key": api_key, "max_queue": max_queue,
                             "result_ttl": result_ttl, "shutdown_timeout": shutdown_timeout,
                             "fetch_hosts": allowed_hosts, "allow_private_fetch": allow_private_fetch,
                             "no_auth": no_auth, "allow_origins": frozenset(origins),
                             "allow_hosts": frozenset(name.lower() for name in host_names),
                             "offline": bool(load.offline), "allow_pull": allow_pull, "pin_model": no_swap,
                             **_keep_alive_settings(keep_alive, max_keep_alive)}
    settings = ServerSettings(**{name: value for name, value in given.items() if value is not None})
    settings.check()
    try:
        from llava_edge.server.app import run_server
        from llava_edge.server.page import page_url
        from llava_edge.server.request_log import show_server_logs
    except ImportError as err:
        raise click.ClickException(str(err)) from err
    if settings.no_auth:
        click.echo(f"llava-edge: WARNING: serving {settings.host} without a key (--no-auth): anyone who can reach "
                   "this address can caption and upload.", err=True)
    show_server_logs()  # the model's load time, then refusals, swaps and unloads
    captioner = load.with_runtime(prefix_cache_bytes=prefix_cache_mb * 2**20).load()
    root = f"{settings.host}:{settings.port}/v1"
    click.echo(f"llava-edge: {captioner.model_name} loaded; serving http://{root} and ws://{root}", err=True)
    click.echo(f"llava-edge: captioning page: {page_url(settings)} (open it in a browser)", err=True)
    if run_server(captioner, settings):
        captioner.close()
    else:  # a caption still runs past the shutdown deadline; freeing the model under it would crash
        click.echo("llava-edge: a caption was still running at the shutdown deadline; exiting without it.", err=True)


def _keep_alive_settings(keep_alive: str, max_keep_alive: str | None) -> dict[str, float | None]:
    """``--keep-alive`` and ``--max-keep-alive`` in seconds (``ServerSettings`` fields)."""
    from llava_edge.errors import InvalidRequestError
    from llava_edge.server.keep_alive import parse_keep_alive

    try:
        return {"keep_alive": parse_keep_alive(keep_alive, parameter="--keep-alive"),
                "max_keep_alive": None if max_keep_alive is None
                else parse_keep_alive(max_keep_alive, parameter="--max-keep-alive")}
    except InvalidRequestError as err:
        raise click.UsageError(err.message) from err
