"""Dashboard sessions for the load benchmark: Streamlit websocket clients, or headless Chromium pages.

A *websocket session* is what a browser tab does minus drawing: it opens Streamlit's
websocket (``/_stcore/stream``), asks for a page with a query string (``rerun_script``, as
the frontend does on load) and reads the protobuf messages until ``script_finished``. An
action is one page load on a fresh connection, as opening a shareable link is: time to
result is from connecting to the script's end. The elements streamed back are checked:
an exception or error element, or a page without its result (:data:`PAGE_CHECKS`: a search
without its results heading and table, a detail page without its title and values, a risk
page without its title and scatter, a map without its title, chart and regions, a review
page without its title and audit log) is an error, and so is any text mentioning "database
is locked". Behind a proxy with session affinity, a session first loads ``/`` over HTTP, as a
browser does, and sends the cookies it got (the proxy's server cookie) with every websocket, so
all of one user's page loads reach one server process.

A session draws the kind of page first (every kind as often), then one link of that kind.

A *Chromium session* is a playwright page of headless Chromium loading the same links and
waiting until the app says its script is not running; errors are the page's exception and
error elements. It costs a whole renderer per session (see ``bench/README.md``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

#: Text that means two writers collided (DuckDB's message; the store turns waits into StoreBusyError).
LOCKED = ("database is locked", "StoreBusyError", "stayed locked")


@dataclass(frozen=True)
class Action:
    """One page load: ``kind`` is a key of :data:`PAGE_CHECKS`, ``page`` the url path, ``query`` the query string."""

    kind: str
    page: str
    query: str


@dataclass
class Outcome:
    """What one action gave: seconds to result (None: no result) and any error."""

    kind: str
    query: str
    started: float  # seconds since the run began
    seconds: float | None
    error: str | None = None
    session: int = 0


@dataclass
class SessionLog:
    """Every outcome of one session."""

    session: int
    outcomes: list[Outcome] = field(default_factory=list)


Elements = list[tuple[str, str]]


def _heading(elements: Elements, word: str) -> bool:
    """A heading below the title (subheader, header) containing ``word``."""
    return any(t == "heading" and word in x.lower() for t, x in elements)


def _title(elements: Elements) -> bool:
    return any(t == "heading:h1" for t, _ in elements)


#: Page kind -> (its result is there, what is missing otherwise). Each looks for what the page
#: always renders when its script succeeds, the last of it where possible (a page stopped early
#: lacks it): the elements are (type, text) as :func:`websocket_action` collects them.
PAGE_CHECKS: dict[str, tuple[Callable[[Elements], bool], str]] = {
    "search": (
        lambda e: _heading(e, "result") and any(t == "dataframe" for t, _ in e),
        "no results heading and table on the search page",
    ),
    "detail": (lambda e: _title(e) and any(t == "metric" for t, _ in e), "no title and values on the detail page"),
    "risk": (lambda e: _title(e) and any(t == "plotly_chart" for t, _ in e), "no title and scatter on the risk page"),
    "map": (
        lambda e: _title(e) and any(t == "plotly_chart" for t, _ in e) and _heading(e, "regions"),
        "no title, map and regions on the map page",
    ),
    "review": (lambda e: _title(e) and _heading(e, "audit log"), "no title and audit log on the review page"),
}


def plan(
    queries: Sequence[str], lora_keys: Sequence[str], *, retrievers: Sequence[str] = ("behaviour", "bm25"), pages: Sequence[str] = ()
) -> list[Action]:
    """The actions sessions draw from: every query with every retriever, every LoRA's detail
    page, and each page of ``pages`` (kinds of :data:`PAGE_CHECKS` loaded without parameters)."""
    from urllib.parse import urlencode

    unknown = [p for p in pages if p not in PAGE_CHECKS or p in ("search", "detail")]
    if unknown:
        raise ValueError(f"pages must be among {', '.join(k for k in PAGE_CHECKS if k not in ('search', 'detail'))}, got {unknown}")
    acts = [Action("search", "search", urlencode({"q": q, "r": r, "k": 10})) for q in queries for r in retrievers]
    acts += [Action("detail", "detail", urlencode({"lora": key})) for key in lora_keys]
    acts += [Action(page, page, "") for page in pages]
    return acts


def draw(rng: random.Random, actions: Sequence[Action]) -> Action:
    """A kind of page, every kind as often, then one action of that kind."""
    kinds = sorted({a.kind for a in actions})
    kind = rng.choice(kinds)
    return rng.choice([a for a in actions if a.kind == kind])


def check_elements(kind: str, elements: Elements) -> str | None:
    """None when the page shows its result, else what is wrong (elements: (type, text))."""
    for etype, text in elements:
        if etype == "exception":
            return f"exception element: {text[:300]}"
        if etype == "alert:error":
            return f"error element: {text[:300]}"
        if any(word in text for word in LOCKED):
            return f"'{text[:200]}'"
    ok, missing = PAGE_CHECKS.get(kind, (lambda e: True, ""))
    return None if ok(elements) else missing


def affinity_cookies(base: str, timeout_s: float = 30.0) -> str:
    """The ``Cookie`` header a browser would send after loading ``base + "/"`` (the proxy's
    server cookie among them); "" when none was set."""
    import urllib.request

    with urllib.request.urlopen(f"{base}/", timeout=timeout_s) as r:
        return "; ".join(c.split(";", 1)[0].strip() for c in r.headers.get_all("Set-Cookie") or [])


async def websocket_action(url: str, action: Action, timeout_s: float, cookie: str = "") -> tuple[float | None, str | None]:
    """(seconds to result, error) of one page load over Streamlit's websocket (``cookie``: the
    ``Cookie`` header to send, e.g. the proxy's server cookie)."""
    import websockets
    from streamlit.proto.Alert_pb2 import Alert
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    t0 = time.perf_counter()
    elements: list[tuple[str, str]] = []
    try:
        async with asyncio.timeout(timeout_s):
            headers = {"Cookie": cookie} if cookie else None
            async with websockets.connect(
                url, subprotocols=["streamlit"], max_size=None, open_timeout=timeout_s, additional_headers=headers
            ) as ws:
                msg = BackMsg()
                msg.rerun_script.query_string = action.query
                msg.rerun_script.page_name = action.page
                await ws.send(msg.SerializeToString())
                while True:
                    fm = ForwardMsg()
                    fm.ParseFromString(await ws.recv())
                    kind = fm.WhichOneof("type")
                    if kind == "delta" and fm.delta.WhichOneof("type") == "new_element":
                        el = fm.delta.new_element
                        etype = el.WhichOneof("type")
                        if etype == "exception":
                            elements.append(("exception", f"{el.exception.type}: {el.exception.message}"))
                        elif etype == "alert":
                            tag = "alert:error" if el.alert.format == Alert.ERROR else "alert"
                            elements.append((tag, el.alert.body))
                        elif etype == "heading":
                            elements.append(("heading:h1" if el.heading.tag == "h1" else "heading", el.heading.body))
                        elif etype in ("markdown", "text"):
                            elements.append((etype, getattr(el, etype).body))
                        else:
                            elements.append((str(etype), ""))
                    elif kind == "script_finished":
                        if fm.script_finished != ForwardMsg.FINISHED_SUCCESSFULLY:
                            return None, f"script finished with status {ForwardMsg.ScriptFinishedStatus.Name(fm.script_finished)}"
                        break
    except TimeoutError:
        return None, f"no result within {timeout_s:g} s"
    except Exception as e:  # noqa: BLE001 - a refused or dropped connection is an error to report, not a crash
        return None, f"{type(e).__name__}: {e}"
    error = check_elements(action.kind, elements)
    return (None, error) if error else (time.perf_counter() - t0, None)


async def websocket_sessions(
    url: str,
    actions: Sequence[Action],
    sessions: int,
    seconds: float,
    *,
    seed: int = 0,
    timeout_s: float = 120.0,
    think_s: float = 0.5,
    sticky_base: str | None = None,
) -> list[SessionLog]:
    """``sessions`` concurrent users loading random ``actions`` for ``seconds`` (a pause of
    up to ``think_s`` between loads, staggered starts). ``sticky_base``: the proxy's URL; each
    user first loads its ``/`` and sends the cookies it got with every websocket."""
    start = time.perf_counter()
    logs = [SessionLog(k) for k in range(sessions)]

    async def user(log: SessionLog) -> None:
        rng = random.Random(seed * 1000 + log.session)
        await asyncio.sleep(rng.uniform(0, think_s * 2))
        cookie = ""
        if sticky_base:
            try:
                cookie = await asyncio.to_thread(affinity_cookies, sticky_base, timeout_s)
            except OSError as e:
                log.outcomes.append(Outcome("cookie", "/", time.perf_counter() - start, None, f"{type(e).__name__}: {e}", log.session))
        while time.perf_counter() - start < seconds:
            act = draw(rng, actions)
            t = time.perf_counter() - start
            secs, err = await websocket_action(url, act, timeout_s, cookie)
            log.outcomes.append(Outcome(act.kind, act.query, t, secs, err, log.session))
            await asyncio.sleep(rng.uniform(0, think_s))

    await asyncio.gather(*(user(log) for log in logs))
    return logs


async def chromium_sessions(
    base: str,
    actions: Sequence[Action],
    sessions: int,
    seconds: float,
    *,
    seed: int = 0,
    timeout_s: float = 120.0,
    think_s: float = 0.5,
    env: dict[str, str] | None = None,
) -> list[SessionLog]:
    """The same users as headless Chromium pages (playwright, ``/usr/bin/chromium``), one page each."""
    import shutil

    from playwright.async_api import async_playwright

    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
    logs = [SessionLog(k) for k in range(sessions)]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=flags, env=env)
        start = time.perf_counter()

        async def user(log: SessionLog) -> None:
            rng = random.Random(seed * 1000 + log.session)
            page = await browser.new_page()
            await asyncio.sleep(rng.uniform(0, think_s * 2))
            while time.perf_counter() - start < seconds:
                act = draw(rng, actions)
                t = time.perf_counter() - start
                t0 = time.perf_counter()
                try:
                    await page.goto(f"{base}/{act.page}" + (f"?{act.query}" if act.query else ""), timeout=timeout_s * 1e3)
                    await page.wait_for_selector('[data-testid="stApp"][data-test-script-state="running"]', timeout=5_000)
                except Exception:  # noqa: BLE001 - a fast script may finish before "running" is seen
                    pass
                try:
                    await page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout_s * 1e3)
                    bad = page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]')
                    err = f"error element: {(await bad.first.inner_text())[:300]}" if await bad.count() else None
                    log.outcomes.append(Outcome(act.kind, act.query, t, None if err else time.perf_counter() - t0, err, log.session))
                except Exception as e:  # noqa: BLE001 - a page that never finishes is an error to report
                    log.outcomes.append(Outcome(act.kind, act.query, t, None, f"{type(e).__name__}: {str(e)[:200]}", log.session))
                await asyncio.sleep(rng.uniform(0, think_s))
            await page.close()

        await asyncio.gather(*(user(log) for log in logs))
        await browser.close()
    return logs
