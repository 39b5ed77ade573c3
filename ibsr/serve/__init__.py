"""ibsr-serve: the searcher loaded once behind HTTP, with batching, hot reload and a web page.

    from ibsr.serve import ServeConfig, SearchService, create_app
    app = create_app(SearchService(ServeConfig(index_dir=Path("ibsr_index"))))  # any ASGI server

`service.py` holds the batching worker and the reload watcher, `app.py` the HTTP API,
`shapes.py` the GLB / camera helpers, `static/` the page (three.js vendored from npm).
"""

from ibsr.serve.app import create_app
from ibsr.serve.service import SearchService, ServeConfig, thread_budget, usable_cpus

__all__ = ["SearchService", "ServeConfig", "create_app", "thread_budget", "usable_cpus"]
