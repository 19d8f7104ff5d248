"""Measure dynroute's primary/replica routing and django-multidb-router 0.11 side by side.

``bench/run.py`` runs this inside ``bench/.venv-multidb``, where django-multidb-router
0.11 (module ``multidb``) comes from PyPI and dynroute is installed editable from this
checkout. Both run in one process, on the same Django and the same SQLite databases
(``default``, the primary, and ``replica1``/``replica2``), alternating round by round.
Each variant installs its own router in ``django.db.router`` before it runs, as
``DATABASE_ROUTERS`` would.

Measures (see ``LABELS`` in run.py for the rows they make):

- ``replica_decision``: ``router.db_for_read(Item)`` + ``router.db_for_write(Item)``
  through Django's ``ConnectionRouter``, reads not pinned: dynroute inside a
  ``PrimaryReplica(pin_after_write=False)`` block entered once around the loop;
  multidb's ``PinningReplicaRouter`` with the thread not pinned.
- ``replica_decision_pinned``: the same, with reads pinned to the primary: dynroute's
  block with ``pin_after_write=True`` after one write; multidb's thread pinned with
  ``pin_this_thread()`` (what its middleware does for a request that writes).
- ``request_get``, ``request_get_pinned``, ``request_get_pinned_new``, ``request_post``:
  one request through ``django.test.Client`` with ``MIDDLEWARE`` empty (``*_none``)
  or holding only the library's middleware (``*_middleware``), each with its
  library's router installed. GET reads one count, POST saves one row; the pinned GET
  carries the pin cookie a POST through that middleware set (``_new``: dynroute's
  middleware has forgotten that it found that cookie valid, so it checks its HMAC).

CPU time on one CPU, as in measure.py. ``--count MEASURE/VARIANT N`` runs one variant
N times without timing, for instruction counts under callgrind (see run.py).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import django  # noqa: E402 - after sys.path is set
from django.conf import settings  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable

    from django.test import Client

PRIMARY, REPLICAS = "default", ("replica1", "replica2")
#: Items in each database: a read's count shows which database answered.
COUNTS = {"default": 3, "replica1": 5, "replica2": 7}
#: The pin window of both middlewares: long enough that a pin cookie made when the
#: process starts is still valid at its end (checking it costs the same either way).
PIN_SECONDS = 3600
IMPLS = ("dynroute", "multidb")
MIDDLEWARE = {
    "dynroute": "dynroute.middleware.PrimaryReplicaMiddleware",
    "multidb": "multidb.middleware.PinningRouterMiddleware",
}
ROUTERS = {"dynroute": "dynroute.DynamicDbRouter", "multidb": "multidb.PinningReplicaRouter"}


def setup(folder: Path) -> None:
    """Configure Django, create and seed the three SQLite databases."""

    def sqlite(name: str) -> dict[str, Any]:
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": str(folder / f"{name}.sqlite3")}

    settings.configure(
        DEBUG=False,
        SECRET_KEY="dynroute-bench-not-secret",  # noqa: S106 - signs the bench's pin cookies
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF="benchapp.urls",
        DATABASES={alias: sqlite(alias) for alias in COUNTS},
        # Each variant sets router.routers to its own router.
        DATABASE_ROUTERS=[ROUTERS["dynroute"]],
        MIDDLEWARE=[],
        INSTALLED_APPS=["benchapp"],
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        DYNROUTE_PRIMARY_REPLICA={
            "primary": PRIMARY,
            "replicas": list(REPLICAS),
            "pin_seconds": PIN_SECONDS,
        },
        REPLICA_DATABASES=list(REPLICAS),
        MULTIDB_PINNING_SECONDS=PIN_SECONDS,
    )
    django.setup()
    from benchapp.models import Item, Note  # noqa: PLC0415 - after setup()
    from django.db import connections  # noqa: PLC0415
    from django.db.backends.signals import connection_created  # noqa: PLC0415

    def no_sync(connection: Any, **_: Any) -> None:  # noqa: ANN401 - Django's signal
        # A POST commits one row: without this, each commit waits for the disk.
        if connection.vendor == "sqlite":
            with connection.cursor() as cursor:
                cursor.execute("PRAGMA synchronous = OFF")
                cursor.execute("PRAGMA journal_mode = MEMORY")

    connection_created.connect(no_sync, weak=False)
    for alias, count in COUNTS.items():
        with connections[alias].schema_editor() as editor:  # lighter than migrate
            editor.create_model(Item)
            editor.create_model(Note)
        Item.objects.using(alias).bulk_create(Item(name=alias) for _ in range(count))


def build_variants() -> dict[str, dict[str, Callable[[int], object]]]:  # noqa: C901 - one place lists every variant
    """Every measured loop, by measure and variant."""
    import multidb  # noqa: PLC0415 - after setup()
    from benchapp.models import Item  # noqa: PLC0415
    from django.db import router  # noqa: PLC0415
    from django.test import Client  # noqa: PLC0415
    from multidb.pinning import pin_this_thread, unpin_this_thread  # noqa: PLC0415

    import dynroute  # noqa: PLC0415
    from dynroute.http import _replicas as dynroute_middleware  # noqa: PLC0415

    if str(ROOT / "src") not in (dynroute.__file__ or "") or "site-packages" not in (
        multidb.__file__ or ""
    ):
        msg = f"wrong modules loaded: {dynroute.__file__}, {multidb.__file__}"
        raise RuntimeError(msg)
    if multidb.__version__ != "0.11.0":
        msg = f"django-multidb-router {multidb.__version__} loaded, 0.11 expected"
        raise RuntimeError(msg)
    routers = {"dynroute": dynroute.DynamicDbRouter(), "multidb": multidb.PinningReplicaRouter()}

    def use_router(impl: str) -> None:
        router.routers = [routers[impl]]
        if impl == "multidb":
            # Its middleware leaves the thread pinned after a request that wrote.
            unpin_this_thread()

    def decision(impl: str, *, pinned: bool) -> Callable[[int], object]:
        db_for_read, db_for_write = router.db_for_read, router.db_for_write
        if impl == "multidb":

            def run_multidb(n: int) -> object:
                use_router(impl)
                if pinned:
                    pin_this_thread()
                read = None
                try:
                    for _ in range(n):
                        read = db_for_read(Item)
                        db_for_write(Item)
                finally:
                    unpin_this_thread()
                return read

            return run_multidb
        policy = dynroute.PrimaryReplica(PRIMARY, REPLICAS, pin_after_write=pinned)
        block = dynroute.in_database(policy=policy)

        def run_dynroute(n: int) -> object:
            use_router(impl)
            read = None
            with block:
                if pinned:
                    # A write (an UPDATE of no row): the reads below follow it, pinned.
                    Item.objects.filter(pk=-1).update(name="")
                    if db_for_read(Item) != PRIMARY:
                        msg = "dynroute's reads are not pinned after a write"
                        raise RuntimeError(msg)
                for _ in range(n):
                    read = db_for_read(Item)
                    db_for_write(Item)
            return read

        return run_dynroute

    def client(impl: str, *, middleware: bool) -> Client:
        """A test client whose handler has the middleware chain built (settings read now)."""
        settings.MIDDLEWARE = [MIDDLEWARE[impl]] if middleware else []
        use_router(impl)
        made = Client()
        made.handler.load_middleware()
        settings.MIDDLEWARE = []
        return made

    def pin_cookie(impl: str) -> Any:  # noqa: ANN401 - http.cookies.SimpleCookie
        """The cookie a POST through the library's middleware sets."""
        poster = client(impl, middleware=True)
        poster.post("/write/")
        if not poster.cookies:
            msg = f"{impl}'s middleware set no pin cookie after a POST"
            raise RuntimeError(msg)
        return poster.cookies

    def requests(
        impl: str, method: str, *, middleware: bool, pinned: bool = False, new: bool = False
    ) -> Callable[[int], object]:
        made = client(impl, middleware=middleware)
        cookies = pin_cookie(impl) if pinned else None
        send = made.post if method == "POST" else made.get
        path = "/write/" if method == "POST" else "/read/"
        jar = made.cookies

        def run(n: int) -> object:
            use_router(impl)
            body = b""
            for _ in range(n):
                # A fresh visitor each time, or one holding the pin cookie.
                jar.clear()
                if cookies is not None:
                    jar.update(cookies)
                if new:
                    # As if the cookie had never been seen: dynroute checks its HMAC.
                    dynroute_middleware._VERIFIED.clear()  # noqa: SLF001 - cookies found valid
                body = send(path).content
            return body.decode()

        return run

    variants: dict[str, dict[str, Callable[[int], object]]] = {
        "replica_decision": {impl: decision(impl, pinned=False) for impl in IMPLS},
        "replica_decision_pinned": {impl: decision(impl, pinned=True) for impl in IMPLS},
    }
    for name, method, pinned, new in (
        ("request_get", "GET", False, False),
        ("request_get_pinned", "GET", True, False),
        ("request_get_pinned_new", "GET", True, True),
        ("request_post", "POST", False, False),
    ):
        variants[name] = {
            f"{impl}_{kind}": requests(
                impl, method, middleware=kind == "middleware", pinned=pinned, new=new
            )
            for impl in IMPLS
            for kind in ("none", "middleware")
        }
    return variants


#: Where each variant must have read or written: the alias, or the count read.
EXPECTED: dict[str, dict[str, set[str]]] = {
    "replica_decision": {"dynroute": set(REPLICAS), "multidb": set(REPLICAS)},
    "replica_decision_pinned": {"dynroute": {PRIMARY}, "multidb": {PRIMARY}},
    "request_get": {
        "dynroute_none": {str(COUNTS[PRIMARY])},  # no middleware, no block: default
        "dynroute_middleware": {str(COUNTS[alias]) for alias in REPLICAS},
        "multidb_none": {str(COUNTS[alias]) for alias in REPLICAS},  # its router alone
        "multidb_middleware": {str(COUNTS[alias]) for alias in REPLICAS},
    },
    "request_get_pinned": {
        "dynroute_none": {str(COUNTS[PRIMARY])},
        "dynroute_middleware": {str(COUNTS[PRIMARY])},
        "multidb_none": {str(COUNTS[alias]) for alias in REPLICAS},  # nobody reads the cookie
        "multidb_middleware": {str(COUNTS[PRIMARY])},
    },
    "request_get_pinned_new": {
        "dynroute_none": {str(COUNTS[PRIMARY])},
        "dynroute_middleware": {str(COUNTS[PRIMARY])},
        "multidb_none": {str(COUNTS[alias]) for alias in REPLICAS},
        "multidb_middleware": {str(COUNTS[PRIMARY])},
    },
    "request_post": {
        f"{impl}_{kind}": {PRIMARY} for impl in IMPLS for kind in ("none", "middleware")
    },
}

# measure -> (operations per sample, rounds)
PLAN = {
    "replica_decision": (2000, 201),
    "replica_decision_pinned": (2000, 201),
    "request_get": (20, 101),
    "request_get_pinned": (20, 101),
    "request_get_pinned_new": (20, 101),
    "request_post": (20, 101),
}


def compare(
    variants: dict[str, Callable[[int], object]], n: int, rounds: int
) -> dict[str, list[float]]:
    """Time each variant ``rounds`` times, interleaved, rotating the order.

    The garbage collector is off while a round runs and collects before each round, so
    that no round pays for the garbage of another (a request leaves reference cycles).
    """
    names = list(variants)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for name in names:
        variants[name](max(1, n // 10))  # warm up
    clock = time.process_time_ns
    try:
        for round_index in range(rounds):
            gc.collect()
            gc.disable()
            order = names[round_index % len(names) :] + names[: round_index % len(names)]
            for name in order:
                start = clock()
                variants[name](n)
                samples[name].append((clock() - start) / n)
            gc.enable()
    finally:
        gc.enable()
    return samples


def main() -> None:
    from measure import pin_to_one_cpu, summary  # noqa: PLC0415 - shares measure.py's helpers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions: check it runs")
    parser.add_argument("--count", nargs=2, metavar=("MEASURE/VARIANT", "N"))
    arguments = parser.parse_args()
    pin_to_one_cpu()
    with tempfile.TemporaryDirectory(prefix="dynroute-bench-replicas-") as folder:
        setup(Path(folder))
        variants = build_variants()
        if arguments.count:
            measure, variant = arguments.count[0].split("/")
            variants[measure][variant](int(arguments.count[1]))
            return
        results: dict[str, Any] = {}
        for measure, loops in variants.items():
            n, rounds = PLAN[measure]
            if arguments.quick:
                n, rounds = max(1, n // 10), 3
            answers = {name: run(1) for name, run in loops.items()}
            samples = compare(loops, n, rounds)
            results[measure] = {
                "clock": "cpu",
                "operations": n,
                "rounds": rounds,
                "variants": {
                    name: {
                        **summary(values),
                        "samples_ns": values,
                        "answer": answers[name],
                        "right_database": answers[name] in EXPECTED[measure][name],
                    }
                    for name, values in samples.items()
                },
            }
    import multidb  # noqa: PLC0415

    meta = {
        "python": sys.version.split()[0],
        "django": django.get_version(),
        "multidb": f"django-multidb-router {multidb.__version__}",
    }
    json.dump({"meta": meta, "results": results}, sys.stdout)


if __name__ == "__main__":
    main()
