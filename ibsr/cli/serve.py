"""ibsr-serve: the search service and its web page (docs: README "Serve")."""

from __future__ import annotations

import time

import click

from ibsr.cli.common import IbsrCommand, device_option, index_option, weights_option

STARTED = time.perf_counter()  # for "ready in N s" (imports included)


@click.command(cls=IbsrCommand)
@index_option
@weights_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Any but a loopback address (0.0.0.0: every interface) needs --api-key "
                   "or --insecure.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="TCP port.")
@click.option("--api-key", envvar="IBSR_API_KEY", default=None, metavar="KEY",
              help="Require this key of every request (header `Authorization: Bearer KEY` or `X-Api-Key: KEY`; "
                   "the page: open /#key=KEY); others are answered 401. Default: $IBSR_API_KEY, which other users "
                   "cannot read in `ps` as they can a command line.")
@click.option("--insecure", is_flag=True,
              help="Listen on a non-loopback --host without an API key (only behind a proxy that authenticates).")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              help="Let pages of this origin (scheme://host[:port], or * for any) call the API from a browser; "
                   "repeatable. Default: none (no CORS headers).")
@device_option
@click.option("--max-batch", default=32, show_default=True, type=click.IntRange(min=1),
              help="Most requests encoded and reranked together (1 turns batching off).")
@click.option("--encode-batch", default=None, type=click.IntRange(min=1),
              help="Photos per query-encoder call within a batch. Default: 32 (a CPU encodes them one "
                   "photo per worker thread: benchmarks/RESULTS.md, Thread cliffs).")
@click.option("--batch-wait-ms", default=5.0, show_default=True, type=click.FloatRange(min=0),
              help="After the first request of a batch, how long to wait for more to join it (only while other "
                   "requests are still being decoded).")
@click.option("--queue-size", default=64, show_default=True, type=click.IntRange(min=1),
              help="Requests in flight (decoding, queued, searched); more are answered 503 with Retry-After.")
@click.option("--max-upload-mb", default=20.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Largest request body (photo + mask) accepted; larger ones are answered 413.")
@click.option("--timeout", "timeout_s", default=30.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds a request may take (decode + queue + search) before it is answered 504.")
@click.option("--reload-interval", default=1.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds between checks for a new table version (a build); 0 never reloads.")
@click.option("--threads", "torch_threads", default=None, type=click.IntRange(min=1),
              help="Workers of the torch pool (encoders, mask network, rerank) and FAISS threads. "
                   "Default: the usable CPUs.")
@click.option("--decode-threads", default=None, type=click.IntRange(min=1),
              help="Threads decoding photos (and computing GrabCut masks; the mask network runs in the torch pool). "
                   "Default: twice the usable CPUs.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]),
              help="Server log level (debug also logs every request).")
def main(index, weights, host, port, api_key, insecure, cors_origins, device, max_batch, encode_batch,
         batch_wait_ms, queue_size, max_upload_mb, timeout_s, reload_interval, torch_threads, decode_threads,
         log_level):
    """Serve an index over HTTP: POST /search (a photo), GET / (a page to search and view the 3D
    hits), GET /health, GET /options, GET /shapes/ID/mesh.glb and thumbnail.png, GET /openapi.json.

    The index is loaded once; concurrent requests are batched; a build that commits to the index
    is picked up without a restart.

    On a network (README, "Running the service on a network"): a --host other than loopback needs
    --api-key (or $IBSR_API_KEY) or --insecure; with a key, every request except the page's own
    files must carry it. Answers show mesh paths relative to the catalog root, never the server's
    folders. CORS stays closed unless --cors-origin names an origin.

    Limits, each answered JSON {"error": ...}: a request body over --max-upload-mb (20 MB) is
    refused before it is read (413); a photo over 80,000,000 pixels is refused before it is decoded
    (400); beyond --queue-size (64) requests in flight, 503 with Retry-After; a request not answered
    within --timeout (30 s), 504."""
    import logging

    import uvicorn

    from ibsr.index.layout import resolve_index_dir
    from ibsr.serve import SearchService, ServeConfig, create_app
    from ibsr.serve.security import check_api_key, check_exposure, check_origin

    api_key = api_key or None  # an empty $IBSR_API_KEY is no key
    if api_key:
        check_api_key(api_key)
    check_exposure(host, api_key, insecure)  # before the slow part: loading the index
    cors_origins = tuple(check_origin(origin) for origin in cors_origins)

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = ServeConfig(index_dir=resolve_index_dir(index), weights=weights, device=device, max_batch=max_batch,
                         encode_batch=encode_batch, batch_wait_ms=batch_wait_ms, queue_size=queue_size,
                         max_upload_bytes=int(max_upload_mb * 1024 * 1024), timeout_s=timeout_s,
                         reload_interval_s=reload_interval, torch_threads=torch_threads,
                         decode_threads=decode_threads, api_key=api_key, cors_origins=cors_origins)
    service = SearchService(config)
    prepared_s = service.prepare()
    health = service.health()
    click.echo(f"ibsr-serve: {config.index_dir} ({health['shapes']} shapes, table version {health['version']}, "
               f"{health['torch_threads']} torch + {health['decode_threads']} decode threads) loaded in "
               f"{time.perf_counter() - STARTED:.1f} s (networks {prepared_s:.1f} s); http://{host}:{port}/"
               f"{' (API key required: open /#key=KEY)' if api_key else ''}", err=True)
    uvicorn.run(create_app(service), host=host, port=port, log_level=log_level, access_log=log_level == "debug")


if __name__ == "__main__":
    main()
