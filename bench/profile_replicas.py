"""Where dynroute's primary/replica time goes: each layer of a decision and of the middleware.

Run in the venv that run.py makes for the multidb comparison::

    bench/.venv-multidb/bin/python bench/profile_replicas.py                 # CPU time
    bench/.venv-multidb/bin/python bench/profile_replicas.py --instructions  # callgrind
    bench/.venv-multidb/bin/python bench/profile_replicas.py d_route_read m_route_read

Each case is one statement, run N times in a loop; the figure is per run of the
statement, less the empty loop. Cases nest (``router.db_for_read`` calls
``DynamicDbRouter.db_for_read``, which calls the entry's ``db_for_read`` ...), so the
difference between a case and the one it calls is the cost of that layer alone. With
``--instructions`` each case runs in its own process under ``valgrind
--tool=callgrind`` (``PYTHONHASHSEED=0``), N times, less a process that runs the empty
loop N times (same set-up). The databases and settings are those of
measure_replicas.py. Cases that name an internal this version of dynroute no longer
has are left out, with a note on stderr.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
import typing
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

# name -> (what it is, the scope of the loop, the statement). Scopes: "dynroute", a
# PrimaryReplica block (pin_after_write=False) with the replica's connection open;
# "pinned", the same with pin_after_write=True after one write; "multidb" and
# "multidb_pinned", multidb's router with the thread unpinned or pinned; "", none
# (dynroute's router installed).
CASES: dict[str, tuple[str, str, str]] = {
    "loop": ("the empty loop (subtracted from every case)", "", "pass"),
    # dynroute, a read on a replica, block entered
    "d_route_read": (
        "router.db_for_read (Django's ConnectionRouter)",
        "dynroute",
        "route_read(Item)",
    ),
    "d_router_read": ("DynamicDbRouter.db_for_read", "dynroute", "dyn_router.db_for_read(Item)"),
    "d_decide_read": ("_state.decide_read", "dynroute", "decide_read(Item, {})"),
    "d_walk_read": (
        "_state.walk (write=False)",
        "dynroute",
        "walk(get_frame(), Item, {}, write=False)",
    ),
    "d_entry_read": ("Entry.db_for_read", "dynroute", "get_frame()[3].db_for_read(Item)"),
    "d_connection": ("replicas._health.connection(alias)", "dynroute", "connection('default')"),
    "d_contextvar": ("ContextVar.get (_FORCED)", "dynroute", "forced_get()"),
    "d_get_frame": ("get_frame() (ContextVar.get)", "dynroute", "get_frame()"),
    # dynroute, the write
    "d_route_write": ("router.db_for_write", "dynroute", "route_write(Item)"),
    "d_router_write": ("DynamicDbRouter.db_for_write", "dynroute", "dyn_router.db_for_write(Item)"),
    "d_decide_write": ("_state.decide_write", "dynroute", "decide_write(Item, {})"),
    "d_walk_write": (
        "_state.walk (write=True)",
        "dynroute",
        "walk(get_frame(), Item, {}, write=True)",
    ),
    "d_entry_write": ("Entry.db_for_write", "dynroute", "get_frame()[3].db_for_write(Item)"),
    # dynroute, pinned read, and a read outside any block
    "d_route_read_pinned": (
        "router.db_for_read, pinned after a write",
        "pinned",
        "route_read(Item)",
    ),
    "d_entry_read_pinned": (
        "Entry.db_for_read, pinned",
        "pinned",
        "get_frame()[3].db_for_read(Item)",
    ),
    "d_route_read_noblock": (
        "router.db_for_read outside any block (None: default)",
        "",
        "route_read(Item)",
    ),
    # multidb
    "m_route_read": ("router.db_for_read", "multidb", "route_read(Item)"),
    "m_router_read": (
        "PinningReplicaRouter.db_for_read",
        "multidb",
        "mdb_router.db_for_read(Item)",
    ),
    "m_pinned": ("this_thread_is_pinned()", "multidb", "this_thread_is_pinned()"),
    "m_get_replica": ("get_replica()", "multidb", "get_replica()"),
    "m_route_write": ("router.db_for_write", "multidb", "route_write(Item)"),
    "m_router_write": (
        "PinningReplicaRouter.db_for_write",
        "multidb",
        "mdb_router.db_for_write(Item)",
    ),
    "m_route_read_pinned": (
        "router.db_for_read, thread pinned",
        "multidb_pinned",
        "route_read(Item)",
    ),
    # the middlewares, around a view that returns a response without a query
    "factory_get": ("RequestFactory().get() (subtracted below)", "", "rf_get()"),
    "factory_get_cookie": ("the same with a pin cookie", "", "rf_get_cookie()"),
    "factory_post": ("RequestFactory().post()", "", "rf_post()"),
    "view_get": ("the view alone, on a new GET", "", "view(rf_get())"),
    "view_post": ("the view alone, on a new POST", "", "view(rf_post())"),
    "dmw_get": ("dynroute middleware + view, GET", "", "dyn_mw(rf_get())"),
    "dmw_get_pinned": (
        "dynroute middleware + view, GET with its signed cookie",
        "",
        "dyn_mw(rf_get_dyn_cookie())",
    ),
    "dmw_post": ("dynroute middleware + view, POST", "", "dyn_mw(rf_post())"),
    "mmw_get": ("multidb middleware + view, GET", "", "mdb_mw(rf_get())"),
    "mmw_get_pinned": (
        "multidb middleware + view, GET with its cookie",
        "",
        "mdb_mw(rf_get_mdb_cookie())",
    ),
    "mmw_post": ("multidb middleware + view, POST", "", "mdb_mw(rf_post())"),
    # the dynroute middleware's steps
    "d_reads_primary_get": (
        "_reads_primary, new GET (incl. the factory)",
        "",
        "dyn_mw._reads_primary(None, rf_get())",
    ),
    "d_reads_primary_get_pinned": (
        "_reads_primary, new GET with the signed cookie (incl. the factory)",
        "",
        "dyn_mw._reads_primary(None, rf_get_dyn_cookie())",
    ),
    "d_block": ("with the middleware's block (enter + exit)", "", "with dyn_mw.block: pass"),
    "d_block_use_primary": (
        "with the middleware's block and use_primary() (enter + exit)",
        "",
        "with dyn_mw.block, use_primary(): pass",
    ),
    "d_has_written": ("has_written()", "", "has_written()"),
    "d_iscoroutinefunction": (
        "asgiref's iscoroutinefunction(middleware)",
        "",
        "iscoroutinefunction(dyn_mw)",
    ),
    "d_call_resolver": ("_call_resolver (no resolver)", "", "dyn_mw._call_resolver(get_request)"),
    "d_cast": ("typing.cast (a call)", "", "cast('str', get_request)"),
    "d_set_up": (
        "InDatabase._set_up (each entry of a PrimaryReplica block)",
        "",
        "dyn_mw.block._set_up()",
    ),
    "d_check_aliases": ("PrimaryReplica.check_aliases", "", "dyn_mw.policy.check_aliases()"),
    "d_require_router": ("require_router()", "", "require_router()"),
    "d_signed_cookie_absent": (
        "get_signed_cookie(default=None), no cookie (a parsed request)",
        "",
        "get_request.get_signed_cookie('dynroute_pin', default=None, salt=SALT, max_age=3600)",
    ),
    "d_cookie_in": ("'dynroute_pin' in request.COOKIES (parsed)", "", "'dynroute_pin' in cookies"),
    "d_unsign": (
        "get_signed_cookie alone, valid cookie (a parsed request)",
        "",
        "dyn_cookie_request.get_signed_cookie('dynroute_pin', salt=SALT, max_age=3600)",
    ),
    "d_unsign_cached_signer": (
        "get_signed_cookie's unsign, with a TimestampSigner built once",
        "",
        "cached_signer.unsign(signed, max_age=3600)",
    ),
    "d_policy_enter": ("PrimaryReplica.enter (choose, new Entry)", "", "dyn_mw.policy.enter()"),
    "d_leave": ("replicas._tracking.leave (outside every block)", "", "leave()"),
    "d_exitstack": (
        "ExitStack around a no-op context manager",
        "",
        "with ExitStack() as stack: stack.enter_context(nothing)",
    ),
    "d_pin_get": (
        "_pin after a GET (nothing to set)",
        "",
        "dyn_mw._pin(get_request, response, primary=False, wrote=False)",
    ),
    "http_response": ("HttpResponse() (subtracted below)", "", "HttpResponse()"),
    "d_pin_post": (
        "_pin after a POST: set_signed_cookie (incl. HttpResponse())",
        "",
        "dyn_mw._pin(post_request, HttpResponse(), primary=True, wrote=False)",
    ),
    "m_set_cookie": (
        "multidb's process_response after a POST: set_cookie (incl. HttpResponse())",
        "",
        "mdb_mw.process_response(post_request, HttpResponse())",
    ),
}


def namespace() -> dict[str, Any]:
    """Set up Django as measure_replicas.py does; return the names the cases use."""
    from measure_replicas import PRIMARY, REPLICAS, setup  # noqa: PLC0415

    setup(Path(tempfile.mkdtemp(prefix="dynroute-profile-")))
    import multidb  # noqa: PLC0415 - after setup()
    from asgiref.sync import iscoroutinefunction  # noqa: PLC0415
    from benchapp.models import Item  # noqa: PLC0415
    from django.core import signing  # noqa: PLC0415
    from django.db import router  # noqa: PLC0415
    from django.http import HttpResponse  # noqa: PLC0415
    from django.test import RequestFactory  # noqa: PLC0415
    from multidb.middleware import PinningRouterMiddleware  # noqa: PLC0415
    from multidb.pinning import (  # noqa: PLC0415
        pin_this_thread,
        this_thread_is_pinned,
        unpin_this_thread,
    )

    import dynroute  # noqa: PLC0415
    from dynroute.core import _stack as _state  # noqa: PLC0415
    from dynroute.http._replicas import _SALT  # noqa: PLC0415
    from dynroute.middleware import PrimaryReplicaMiddleware  # noqa: PLC0415
    from dynroute.replicas import _health, _pins, _tracking  # noqa: PLC0415
    from dynroute.routing import _router  # noqa: PLC0415

    dyn_router, mdb_router = dynroute.DynamicDbRouter(), multidb.PinningReplicaRouter()
    router.routers = [dyn_router]

    def view(request: Any) -> Any:  # noqa: ANN401, ARG001 - a view
        return HttpResponse("3")

    rf = RequestFactory()
    dyn_mw, mdb_mw = PrimaryReplicaMiddleware(view), PinningRouterMiddleware(view)
    post_request = rf.post("/write/")
    signed = dyn_mw(post_request).cookies["dynroute_pin"].value
    dyn_cookie = f"dynroute_pin={signed}"
    get_request = rf.get("/read/")
    # The salt get_signed_cookie uses (Django 5.2.19 derives it in a function).
    salt_of = getattr(signing, "_cookie_signer_salt", lambda name, salt: name + salt)
    names: dict[str, Any] = {
        "Item": Item,
        "HttpResponse": HttpResponse,
        "SALT": _SALT,
        "route_read": router.db_for_read,
        "route_write": router.db_for_write,
        "dyn_router": dyn_router,
        "mdb_router": mdb_router,
        # dynroute's internals, profiled on purpose: they change as it is optimised,
        # and a case whose name is gone is left out (None is not callable).
        "decide_read": getattr(_state, "decide_read", None),
        "decide_write": getattr(_state, "decide_write", None),
        "walk": getattr(_state, "walk", getattr(_state, "_walk", None)),
        "get_frame": _state.get_frame,
        "connection": getattr(_health, "connection", None),
        "forced_get": getattr(getattr(_pins, "FORCED", None), "get", None),
        "has_written": getattr(_pins, "has_written", None),
        "leave": getattr(_tracking, "leave", None),
        "require_router": getattr(_router, "require_router", None),
        "use_primary": dynroute.use_primary,
        "iscoroutinefunction": iscoroutinefunction,
        "cast": typing.cast,
        "ExitStack": contextlib.ExitStack,
        "nothing": contextlib.nullcontext(),
        "this_thread_is_pinned": this_thread_is_pinned,
        "get_replica": multidb.get_replica,
        "view": view,
        "rf_get": lambda: rf.get("/read/"),
        "rf_get_cookie": lambda: rf.get("/read/", HTTP_COOKIE="multidb_pin_writes=y"),
        "rf_get_dyn_cookie": lambda: rf.get("/read/", HTTP_COOKIE=dyn_cookie),
        "rf_get_mdb_cookie": lambda: rf.get("/read/", HTTP_COOKIE="multidb_pin_writes=y"),
        "rf_post": lambda: rf.post("/write/"),
        "dyn_mw": dyn_mw,
        "mdb_mw": mdb_mw,
        "get_request": get_request,
        "cookies": get_request.COOKIES,
        "post_request": post_request,
        "response": HttpResponse("3"),
        "dyn_cookie_request": rf.get("/read/", HTTP_COOKIE=dyn_cookie),
        "signed": signed,
        "cached_signer": signing.get_cookie_signer(salt=salt_of("dynroute_pin", _SALT)),
    }
    blocks = {
        kind: lambda pin=pin: dynroute.in_database(
            policy=dynroute.PrimaryReplica(PRIMARY, REPLICAS, pin_after_write=pin)
        )
        for kind, pin in (("dynroute", False), ("pinned", True))
    }

    @contextlib.contextmanager
    def scope(kind: str) -> typing.Iterator[None]:
        if kind in blocks:
            router.routers = [dyn_router]
            with blocks[kind]():
                router.db_for_read(Item)  # opens the replica's connection
                if kind == "pinned":
                    Item.objects.filter(pk=-1).update(name="")  # a write: pins the reads
                    if router.db_for_read(Item) != PRIMARY:
                        msg = "the reads are not pinned after a write"
                        raise RuntimeError(msg)
                yield
        elif kind.startswith("multidb"):
            router.routers = [mdb_router]
            # As its middleware leaves it: the attribute set (a missing one costs an
            # AttributeError in every getattr).
            unpin_this_thread()
            if kind == "multidb_pinned":
                pin_this_thread()
            try:
                yield
            finally:
                unpin_this_thread()
                router.routers = [dyn_router]
        else:
            router.routers = [dyn_router]
            yield

    names["scope"] = scope
    return names


def loop(names: dict[str, Any], case: str) -> Any:  # noqa: ANN401 - a compiled function
    """Compile the loop of one case: ``run(n)`` runs its statement n times in its scope."""
    _, kind, statement = CASES[case]
    source = (
        "def run(n):\n"
        f"    with scope({kind!r}):\n"
        "        for _ in range(n):\n"
        f"            {statement}\n"
    )
    space = dict(names)
    exec(compile(source, f"<case {case}>", "exec"), space)  # noqa: S102 - our own statements
    return space["run"]


def timed(names: dict[str, Any], cases: list[str], rounds: int, n: int) -> dict[str, float]:
    """Median CPU time per run of each case over ``rounds``, less the empty loop's."""
    from measure import pin_to_one_cpu  # noqa: PLC0415

    pin_to_one_cpu()
    runs = {case: loop(names, case) for case in ["loop", *cases]}
    for case, run in list(runs.items()):
        try:
            run(max(1, n // 10))
        except Exception as error:  # noqa: BLE001, PERF203 - a case this dynroute cannot run
            print(f"{case}: left out ({type(error).__name__}: {error})", file=sys.stderr)
            del runs[case]
    samples: dict[str, list[float]] = {case: [] for case in runs}
    for _ in range(rounds):
        for case, run in runs.items():
            gc.collect()
            gc.disable()
            start = time.process_time_ns()
            run(n)
            samples[case].append((time.process_time_ns() - start) / n)
            gc.enable()
    medians = {case: statistics.median(values) for case, values in samples.items()}
    empty = medians.pop("loop")
    return {case: value - empty for case, value in medians.items()}


def instructions(case: str, n: int) -> int | None:
    """Instructions of one case run n times; None if it fails (a name this version lacks)."""
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--count",
            case,
            str(n),
        ],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    if done.returncode:
        python = [line for line in done.stderr.splitlines() if not line.startswith("==")]
        print(f"{case}: left out ({(python or ['no message'])[-1]})", file=sys.stderr)
        return None
    for line in done.stderr.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1].strip())
    msg = f"no instruction count from valgrind for {case}"
    raise RuntimeError(msg)


def counted(n: int, cases: list[str]) -> dict[str, float]:
    """Instructions per run of each case, less the empty loop's."""
    jobs = [("loop", n), *((case, n) for case in cases)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        totals = list(pool.map(lambda job: instructions(*job), jobs))
    empty, *rest = totals
    if empty is None:
        msg = "the empty loop failed under valgrind"
        raise RuntimeError(msg)
    return {
        case: (total - empty) / n
        for case, total in zip(cases, rest, strict=True)
        if total is not None
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", help="the cases to run (default: all)")
    parser.add_argument("--instructions", action="store_true", help="count with callgrind")
    parser.add_argument("--n", type=int, default=2000, help="runs of each statement")
    parser.add_argument("--rounds", type=int, default=31, help="timed rounds")
    parser.add_argument("--count", nargs=2, metavar=("CASE", "N"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.count:
        case, n = arguments.count[0], int(arguments.count[1])
        loop(namespace(), case)(n)
        return
    cases = [case for case in arguments.cases or CASES if case != "loop"]
    unknown = set(cases) - set(CASES)
    if unknown:
        parser.error(f"unknown cases: {', '.join(sorted(unknown))}; known: {', '.join(CASES)}")
    if arguments.instructions:
        figures, unit = counted(arguments.n, cases), "instructions"
    else:
        figures, unit = timed(namespace(), cases, arguments.rounds, arguments.n), "ns (CPU)"
    print(f"| case | what | {unit} per run |")
    print("|---|---|---|")
    for case, value in figures.items():
        print(f"| {case} | {CASES[case][0]} | {value:,.0f} |")


if __name__ == "__main__":
    main()
