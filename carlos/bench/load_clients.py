"""Dashboard sessions for the load benchmark: Streamlit websocket clients, or headless Chromium pages.

A *websocket session* is what a browser tab does minus drawing: it opens Streamlit's
websocket (``/_stcore/stream``), asks for a page with a query string (``rerun_script``, as
the frontend does on load) and reads the protobuf messages until ``script_finished``. An
action is one page load on a fresh connection, as opening a shareable link is: time to
result is from connecting to the script's end. The elements streamed back are checked:
an exception or error element, or a page without its result (a search without its results
heading and table, a detail page without its title and values) is an error, and so is any
text mentioning "database is locked".

A *Chromium session* is a playwright page of headless Chromium loading the same links and
waiting until the app says its script is not running; errors are the page's exception and
error elements. It costs a whole renderer per session (see ``bench/README.md``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

#: Text that means two writers collided (DuckDB's message; the store turns waits into StoreBusyError).
LOCKED = ("database is locked", "StoreBusyError", "stayed locked")


@dataclass(frozen=True)
class Action:
    """One page load: ``kind`` is "search" or "detail", ``page`` the url path, ``query`` the query string."""

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


def plan(queries: Sequence[str], lora_keys: Sequence[str], *, retrievers: Sequence[str] = ("behaviour", "bm25")) -> list[Action]:
    """The actions sessions draw from: every query with every retriever, every LoRA's detail page."""
    from urllib.parse import urlencode

    acts = [Action("search", "search", urlencode({"q": q, "r": r, "k": 10})) for q in queries for r in retrievers]
    acts += [Action("detail", "detail", urlencode({"lora": key})) for key in lora_keys]
    return acts


def check_elements(kind: str, elements: list[tuple[str, str]]) -> str | None:
    """None when the page shows its result, else what is wrong (elements: (type, text))."""
    for etype, text in elements:
        if etype == "exception":
            return f"exception element: {text[:300]}"
        if etype == "alert:error":
            return f"error element: {text[:300]}"
        if any(word in text for word in LOCKED):
            return f"'{text[:200]}'"
    types = {t for t, _ in elements}
    if kind == "search" and not (any(t == "heading" and "result" in x for t, x in elements) and "dataframe" in types):
        return "no results heading and table on the search page"
    if kind == "detail" and not (any(t == "heading:h1" for t, _ in elements) and "metric" in types):
        return "no title and values on the detail page"
    return None


async def websocket_action(url: str, action: Action, timeout_s: float) -> tuple[float | None, str | None]:
    """(seconds to result, error) of one page load over Streamlit's websocket."""
    import websockets
    from streamlit.proto.Alert_pb2 import Alert
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    t0 = time.perf_counter()
    elements: list[tuple[str, str]] = []
    try:
        async with asyncio.timeout(timeout_s):
            async with websockets.connect(url, subprotocols=["streamlit"], max_size=None, open_timeout=timeout_s) as ws:
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
    url: str, actions: Sequence[Action], sessions: int, seconds: float, *, seed: int = 0, timeout_s: float = 120.0, think_s: float = 0.5
) -> list[SessionLog]:
    """``sessions`` concurrent users loading random ``actions`` for ``seconds`` (a pause of
    up to ``think_s`` between loads, staggered starts)."""
    start = time.perf_counter()
    logs = [SessionLog(k) for k in range(sessions)]

    async def user(log: SessionLog) -> None:
        rng = random.Random(seed * 1000 + log.session)
        await asyncio.sleep(rng.uniform(0, think_s * 2))
        while time.perf_counter() - start < seconds:
            act = rng.choice(actions)
            t = time.perf_counter() - start
            secs, err = await websocket_action(url, act, timeout_s)
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
                act = rng.choice(actions)
                t = time.perf_counter() - start
                t0 = time.perf_counter()
                try:
                    await page.goto(f"{base}/{act.page}?{act.query}", timeout=timeout_s * 1e3)
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
