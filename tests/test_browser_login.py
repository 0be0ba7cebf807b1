"""Browser test of a real login: ``oidc-provider-mock`` is the identity provider, Streamlit's
``st.login`` the client, headless Chromium the user, over a private copy of the store.

A listed reviewer logs in through the sidebar, claims and decides, and the audit log names her
e-mail. An unlisted user logs in the same way and gets read-only pages. The clicks a hostile
client can still send past the disabled widgets (claim, decision, bulk flag) are delivered to
the server exactly as the reviewer's accepted ones were, and nothing of hers reaches the store
(Streamlit drops events of widgets it drew disabled); under the same secrets file the
library's own check refuses her too, had a page let her through.
"""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import pytest

from carlos.config import CORPUS_EMBEDDER
from carlos.errors import PermissionDeniedError
from carlos.review import workflow as review
from carlos.review.access import CurrentUser
from carlos.search.views import corpus_view
from carlos.serving import free_ports, spawn, stop, streamlit_command, wait_healthy
from carlos.store.store import Store

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update"]
REVIEWER = "alice@example.org"
OUTSIDER = "mallory@example.org"
LORA = "130580"  # a Civitai version id of the corpus; the detail page resolves it
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
ERRORS = '[data-testid="stException"], [data-testid="stAlertContentError"]'
TIMEOUT_MS = 60_000

#: Count the script runs the server reports finished (ForwardMsg field 6, ``script_finished``) on
#: every websocket of the page. A run that ends quickly may never show the "running" state in the
#: DOM (React batches it away), so a click waits for this count instead.
COUNT_RUNS = """(() => {
    const finished = (buf) => {
        const b = new Uint8Array(buf);
        let i = 0;
        const varint = () => { let x = 0, s = 0, c; do { c = b[i++]; x += (c & 0x7f) * 2 ** s; s += 7; } while (c & 0x80); return x; };
        while (i < b.length) {
            const key = varint(), field = Math.floor(key / 8), wt = key % 8;
            if (field === 6) return true;
            if (wt === 0) varint(); else if (wt === 1) i += 8;
            else if (wt === 2) { const n = varint(); i += n; } else if (wt === 5) i += 4; else return false;
        }
        return false;
    };
    window.__carlosRunsFinished = 0;
    const Native = window.WebSocket;
    window.WebSocket = class extends Native {
        constructor(...args) {
            super(...args);
            this.addEventListener('message', (e) => {
                const count = (buf) => { if (finished(buf)) window.__carlosRunsFinished += 1; };
                if (e.data instanceof ArrayBuffer) count(e.data); else if (e.data instanceof Blob) e.data.arrayBuffer().then(count);
            });
        }
    };
})()"""

#: Hand a button's event to the page's Streamlit widget manager, as its click handler would,
#: minus the handler's "disabled" check: what a client that edits the page's script can send.
SEND_CLICK = """el => {
    window.__carlosRunsAtClick = window.__carlosRunsFinished;
    const key = Object.keys(el).find(k => k.startsWith('__reactFiber$'));
    for (let f = key && el[key]; f; f = f.return) {
        const p = f.memoizedProps || {};
        if (!p.widgetMgr || !p.element) continue;
        if (el.closest('[data-testid="stFormSubmitButton"]')) {
            p.widgetMgr.submitForm(p.element.formId, p.fragmentId, p.element);
        } else {
            p.widgetMgr.setTriggerValue(p.element.id, {formId: p.element.formId, fragmentId: p.fragmentId, fromUser: true});
        }
        return true;
    }
    return false;
}"""


def _secrets_toml(dashboard: str, idp: str) -> str:
    """[auth] at the mock provider (it accepts any client id and secret) and one listed reviewer."""
    return (
        "[auth]\n"
        f'redirect_uri = "{dashboard}/oauth2callback"\n'
        f'cookie_secret = "{secrets.token_hex(32)}"\n'
        'client_id = "carlos-browser-test"\n'
        f'client_secret = "{secrets.token_hex(16)}"\n'
        f'server_metadata_url = "{idp}/.well-known/openid-configuration"\n'
        "\n[carlos]\n"
        f'reviewers = ["{REVIEWER}"]\n'
    )


class Servers(NamedTuple):
    idp: str  # the provider's URL
    url: str  # the dashboard's URL
    store: Store  # the dashboard's store (a private copy)
    secrets: Path  # the dashboard's secrets.toml


@pytest.fixture(scope="module")
def servers(real_store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """The mock OpenID provider and the dashboard with login on, over a private copy of the
    store, both on loopback ports (started side by side).

    The provider's login form takes any subject and issues it as the ``email`` claim, so
    typing an address there logs in as that address."""
    for module, why in (("oidc_provider_mock", "the identity provider"), ("authlib", "st.login")):
        if importlib.util.find_spec(module) is None:
            pytest.fail(f"{module} is not installed ({why} needs it): run `make setup` (pinned in requirements.txt)")
    tmp = tmp_path_factory.mktemp("login")
    db = tmp / "carlos.duckdb"
    shutil.copy(real_store_path, db)
    idp, dashboard = (f"http://127.0.0.1:{p}" for p in free_ports(2))
    (tmp / "secrets.toml").write_text(_secrets_toml(dashboard, idp))
    # the reviewer list comes from the secrets file alone, not from this shell
    env = {k: v for k, v in os.environ.items() if k not in ("CARLOS_REVIEWER", "CARLOS_REVIEWERS")}
    env["CARLOS_DB"] = str(db)
    cmd = streamlit_command("streamlit_app.py", urlsplit(dashboard).port, "--secrets.files", str(tmp / "secrets.toml"))
    procs = [
        spawn([sys.executable, "-m", "oidc_provider_mock", "--host", "127.0.0.1", "--port", str(urlsplit(idp).port)], tmp / "idp.log"),
        spawn(cmd, tmp / "dashboard.log", env),
    ]
    try:
        wait_healthy(idp, procs[0], tmp / "idp.log", timeout_s=120, path="/.well-known/openid-configuration")
        wait_healthy(dashboard, procs[1], tmp / "dashboard.log", timeout_s=120)
        yield Servers(idp, dashboard, Store.open(db), tmp / "secrets.toml")
    finally:
        for proc in procs:
            stop(proc)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: run `make browser`")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def other_loras(servers: Servers) -> list[str]:
    """Two corpus LoRAs besides the one both users open first."""
    ids = [i for i in corpus_view(servers.store, CORPUS_EMBEDDER).frame["lora_id"] if i != f"civitai:{LORA}"]
    assert len(ids) >= 2, "the corpus store has fewer than three LoRAs"
    return ids[:2]


def _loopback_only(route: Any) -> None:
    """Nothing leaves the machine (the mock's login form links a stylesheet on a CDN)."""
    if urlsplit(route.request.url).hostname in ("127.0.0.1", "localhost"):
        route.continue_()
    else:
        route.abort()


def _login(browser: Any, dashboard: str, idp: str, email: str) -> tuple[Any, Any]:
    """A fresh browser context (its own cookies) logged in as ``email`` with the sidebar's button."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    context.route("**/*", _loopback_only)
    context.add_init_script(COUNT_RUNS)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{dashboard}/detail?lora={LORA}", wait_until="domcontentloaded")
    page.get_by_text("log in (sidebar) to record decisions").first.wait_for()
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{idp}/oauth2/authorize**")
    page.fill('input[name="sub"]', email)
    page.get_by_role("button", name="Authorize", exact=True).click()
    page.wait_for_url(f"{dashboard}/**")
    page.get_by_text(f"Signed in as {email}").first.wait_for()
    return context, page


def _open(page: Any, url: str) -> None:
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector('[data-testid="stMain"]')


def _send_click(page: Any, name: str, *, disabled: bool = False) -> None:
    """Send the click of button ``name`` (see SEND_CLICK), which must be drawn ``disabled``
    or not, and wait until the run it starts has ended."""
    button = page.get_by_role("button", name=name, exact=True)
    button.wait_for()
    assert button.is_disabled() == disabled, f"{name!r} should be {'disabled' if disabled else 'enabled'}"
    page.wait_for_selector(IDLE)  # the button is drawn and the run that drew it has ended
    assert button.evaluate(SEND_CLICK), f"no Streamlit widget behind the button {name!r} (frontend changed?)"
    page.wait_for_function("window.__carlosRunsFinished > window.__carlosRunsAtClick")


def _decisions(store: Store) -> list[tuple[str, str, str]]:
    """The audit log's decisions as (reviewer, lora_id, action), newest first."""
    log = review.history(store)
    return list(zip(log["reviewer"], log["lora_id"], log["action"]))


def _no_errors(page: Any) -> None:
    errors = page.locator(ERRORS)
    assert errors.count() == 0, errors.first.inner_text()[:500]


def test_listed_reviewer_logs_in_claims_and_decides(browser: Any, servers: Servers, other_loras: list[str]) -> None:
    idp, url, store, _ = servers
    n_before = len(_decisions(store))
    context, page = _login(browser, url, idp, REVIEWER)
    # The LoRA box's code arrives only after the claim has been drawn again, as on a slow or busy
    # client: the box then mounts with that later drawing and commits its default, which the
    # decision form sends back (a default of "no LoRA" lost the decision under CI's load).
    cdp = context.new_cdp_session(page)  # a request paused here waits without holding the test
    paused: list[str] = []
    cdp.on("Fetch.requestPaused", lambda e: paused.append(e["requestId"]))
    cdp.send("Fetch.enable", {"patterns": [{"urlPattern": "*/static/js/Selectbox.*.js", "requestStage": "Request"}]})
    _open(page, f"{url}/detail?lora={LORA}")
    page.get_by_text(f"Signed in as {REVIEWER} (reviewer)").first.wait_for()
    assert page.get_by_text("not a listed reviewer").count() == 0
    page.get_by_role("button", name="Claim for review").click()
    page.get_by_role("button", name="Record decision").wait_for()
    page.wait_for_selector(IDLE)
    assert paused, "the LoRA box's code was not requested (frontend changed?)"
    cdp.send("Fetch.disable")  # lets the paused request go on
    page.get_by_role("combobox").first.wait_for()
    page.get_by_text("flag", exact=True).click()
    page.get_by_label("Note (kept in the audit log)").fill("browser login test")
    # sent like the outsider's forced clicks below: those reach the server and act when the
    # user may write (a form submit here, a button trigger on the next LoRA)
    _send_click(page, "Record decision")
    page.get_by_text(f"Recorded: flag by {REVIEWER}").first.wait_for()
    _no_errors(page)
    lid = other_loras[0]
    _open(page, f"{url}/detail?lora={lid}")
    _send_click(page, "Claim for review")
    page.get_by_role("button", name="Record decision").wait_for()
    _no_errors(page)
    context.close()

    rows = _decisions(store)
    new = rows[: len(rows) - n_before]
    assert new and new[0] == (REVIEWER, f"civitai:{LORA}", "flag"), new
    assert {r for r, _, _ in new} == {REVIEWER}, new
    assert review.claim_holder(store, LORA) is None  # deciding released the claim
    assert review.claim_holder(store, lid) == REVIEWER


def test_unlisted_user_is_read_only_and_forced_writes_are_refused(
    browser: Any, servers: Servers, other_loras: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    idp, url, store, _ = servers
    stale = other_loras[1]
    # a claim left over from when she was on the list: the decision form is drawn for her
    store.review.claim(stale, OUTSIDER)
    before = _decisions(store)
    thresholds_before = len(review.threshold_history(store))
    context, page = _login(browser, url, idp, OUTSIDER)
    read_only = f"Read-only: {OUTSIDER} is not a listed reviewer"

    _open(page, f"{url}/detail?lora={LORA}")
    page.get_by_text(f"Signed in as {OUTSIDER} (read-only)").first.wait_for()
    page.get_by_text(read_only).first.wait_for()
    _send_click(page, "Claim for review", disabled=True)
    assert review.claim_holder(store, LORA) is None

    _open(page, f"{url}/detail?lora={stale}")
    page.get_by_text(read_only).first.wait_for()
    assert page.get_by_role("button", name="Release claim").is_disabled()
    _send_click(page, "Record decision", disabled=True)
    assert review.claim_holder(store, stale) == OUTSIDER

    _open(page, f"{url}/risk?sel={stale}")
    page.get_by_text(read_only).first.wait_for()
    assert page.get_by_role("button", name="Save these thresholds").is_disabled()
    _send_click(page, "Flag these 1 LoRAs", disabled=True)
    _no_errors(page)
    context.close()

    after = _decisions(store)
    assert after == before, after[: len(after) - len(before)]
    assert OUTSIDER not in {r for r, _, _ in after}
    assert len(review.threshold_history(store)) == thresholds_before

    # Streamlit drops events of widgets it drew disabled, so none of the above reached the
    # library. Had a page let her through (a UI believing she may write), the library's own
    # check refuses her under the dashboard's configuration:
    monkeypatch.delenv("CARLOS_REVIEWERS", raising=False)
    believed = CurrentUser(name=OUTSIDER, can_write=True, reason="", mode="oidc", logged_in=True, secrets_files=(str(servers.secrets),))
    with pytest.raises(PermissionDeniedError, match=f"{re.escape(OUTSIDER)}.*not a listed reviewer"):
        review.decide(store, stale, believed, "flag")
    with pytest.raises(PermissionDeniedError, match=re.escape(OUTSIDER)):
        review.bulk_flag(store, [LORA], believed)
    assert _decisions(store) == before
