"""The web console (/ui/) in a real browser: Playwright for Python driving Debian's chromium.

Scenarios: an operator logs in, creates a key (its secret shown once), uses it through tollgate,
finds the request in the usage explorer and the key's chart, revokes it (the next request is a
401); a key holder sees only their own key; a hostile key name renders as text; a cross-origin
form post is refused; charts are drawn; a request shows up on the Traces page (list and detail,
an operator's and a key holder's own); the login rate limit refuses a correct key after too many
failures (last: it locks this address out for the rest of the minute).

On failure, a screenshot of the page goes to target/console-failures/. With TG_DOCS_SHOTS=<dir>
(e.g. docs/console), one screenshot per page is written there for the docs.
"""

import http.server
import json
import os
import pathlib
import threading
import time
import urllib.error
import urllib.request

import pytest
from playwright.sync_api import sync_playwright

ROOT = pathlib.Path(__file__).resolve().parents[2]
FAILURES = ROOT / "target" / "console-failures"
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def master():
    return os.environ["TG_MASTER"]


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, request):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    dialogs = []
    pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    pg.dialogs = dialogs
    yield pg
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        FAILURES.mkdir(parents=True, exist_ok=True)
        shot = FAILURES / f"{request.node.name}.png"
        pg.screenshot(path=str(shot), full_page=True)
        print(f"screenshot of the failing page: {shot}")
    ctx.close()


def docs_shot(pg, name):
    target = os.environ.get("TG_DOCS_SHOTS")
    if target:
        d = ROOT / target
        d.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(d / f"{name}.png"), full_page=True)


def call(base, method, path, token, body=None):
    req = urllib.request.Request(base + path, method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"authorization": f"Bearer {token}",
                                          "content-type": "application/json"})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def chat(base, key):
    return call(base, "POST", "/v1/chat/completions", key,
                {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})


def chat_with_id(base, key, model, request_id):
    """A chat request with the request id the trace is stored under."""
    req = urllib.request.Request(
        base + "/v1/chat/completions", method="POST",
        data=json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"authorization": f"Bearer {key}", "content-type": "application/json",
                 "x-request-id": request_id})
    with urllib.request.urlopen(req) as r:
        assert r.headers["x-request-id"] == request_id
        return r.status


def login(pg, base, secret):
    pg.goto(base + "/ui/")
    assert pg.url.endswith("/ui/login")
    pg.fill("input[name=key]", secret)
    pg.click("button[type=submit]")
    pg.wait_for_load_state()


def bar_pixels(pg, selector):
    """Pixels of a canvas drawn in the chart's bar colour (#2f6fde): bars, not just an axis."""
    return pg.eval_on_selector(selector, """c => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4)
            if (d[i] === 0x2f && d[i + 1] === 0x6f && d[i + 2] === 0xde && d[i + 3] === 255) n++;
        return n;
    }""")


def wait_for(pg, check, reload=True, tries=40):
    """Polls the page (the usage writer commits in groups) until `check()` holds."""
    for _ in range(tries):
        if check():
            return True
        pg.wait_for_timeout(250)
        if reload:
            pg.reload()
            pg.wait_for_load_state("networkidle")
    return check()


def test_browser_on_root_is_sent_to_the_console(page, base):
    page.goto(base + "/")
    assert page.url == base + "/ui/login"
    with urllib.request.urlopen(base + "/") as r:
        assert r.read() == b"tollgate\n"


def test_operator_creates_uses_and_revokes_a_key(page, base, master):
    login(page, base, master)
    assert page.url.endswith("/ui/overview")
    assert page.text_content("h1") == "Overview"

    page.goto(base + "/ui/keys")
    page.fill("#create input[name=name]", "browser-key")
    page.fill("#create input[name=max_budget]", "5")
    page.fill("#create input[name=budget_duration]", "monthly")
    page.click("#create button[type=submit]")
    page.wait_for_selector("#secret-value")
    secret = page.text_content("#secret-value")
    assert secret.startswith("tg-")
    assert "shown only this once" in page.text_content("#secret")
    page.reload()
    page.wait_for_load_state("networkidle")
    assert secret not in page.content()

    # Eight requests on two models (one of them translated to Anthropic's API).
    for model in ["gpt-4o-mini"] * 5 + ["claude-sonnet-4-6"] * 3:
        status, _ = call(base, "POST", "/v1/chat/completions", secret,
                         {"model": model, "messages": [{"role": "user", "content": "hi"}]})
        assert status == 200
    status, info = call(base, "GET", "/v1/key/info", secret)
    key_id = info["id"]

    page.goto(base + f"/ui/usage?key_id={key_id}")
    page.wait_for_load_state("networkidle")
    assert wait_for(page, lambda: page.text_content("#totals").startswith("Requests8"))
    records = page.text_content("#records")
    assert key_id in records and "gpt-4o-mini" in records and "claude-sonnet-4-6" in records
    groups = page.text_content("#groups")
    assert "gpt-4o-mini5" in groups and "claude-sonnet-4-63" in groups
    assert bar_pixels(page, "#series") > 0
    docs_shot(page, "usage")

    page.goto(base + f"/ui/keys?id={key_id}")
    page.wait_for_selector("#key-chart[data-points]")
    assert page.text_content("#detail-name") == "browser-key"
    assert bar_pixels(page, "#key-chart") > 0
    docs_shot(page, "keys")

    page.goto(base + "/ui/overview")
    page.wait_for_selector("#hourly[data-points]")
    assert bar_pixels(page, "#hourly") > 0
    assert key_id in page.text_content("#top-keys")
    docs_shot(page, "overview")
    for slug in ["models", "users", "budgets", "guardrails"]:
        page.goto(base + f"/ui/{slug}")
        page.wait_for_load_state("networkidle")
        assert page.text_content("#error") == ""
        docs_shot(page, slug)
    # run.sh configures one policy, `tool-injection`.
    assert "tool-injection" in page.text_content("#policies")
    assert "prompt-injection" in page.text_content("#policies")
    page.goto(base + "/ui/models")
    page.wait_for_load_state("networkidle")
    assert "gpt-4o-mini" in page.text_content("#models")

    page.goto(base + f"/ui/keys?id={key_id}")
    page.wait_for_selector("#revoke")
    page.click("#revoke")
    assert page.text_content("#revoke") == "Confirm revoke"
    page.click("#revoke")
    page.wait_for_selector("#detail >> text=revoked")
    status, body = chat(base, secret)
    assert status == 401, body

    # Logout ends the session: the console asks for a login again.
    page.click("form.logout button")
    page.wait_for_load_state()
    assert page.url.endswith("/ui/login")
    page.goto(base + "/ui/keys")
    assert page.url.endswith("/ui/login")


def test_key_holder_sees_only_their_own_key(page, base, master):
    _, mine = call(base, "POST", "/v1/keys", master, {"name": "holder-mine", "max_budget": 3})
    _, other = call(base, "POST", "/v1/keys", master, {"name": "holder-other"})
    assert chat(base, mine["key"])[0] == 200
    assert chat(base, other["key"])[0] == 200

    login(page, base, mine["key"])
    assert page.url.endswith("/ui/me")
    page.wait_for_selector("#cards .card")
    assert "holder-mine" in page.text_content("#cards")
    assert wait_for(page, lambda: "gpt-4o-mini" in (page.text_content("#records") or ""))
    assert bar_pixels(page, "#daily") > 0
    text = page.text_content("body")
    assert "holder-other" not in text and other["id"] not in text
    nav = page.eval_on_selector_all("nav a", "as => as.map(a => a.textContent)")
    assert nav == ["My key", "Traces"]
    docs_shot(page, "me")

    # Operator pages send a key holder back to their own page; the API refuses them.
    page.goto(base + "/ui/keys")
    assert page.url.endswith("/ui/me")
    keys = page.evaluate("fetch('/ui/api/v1/keys').then(r => r.status)")
    assert keys == 403
    rows = page.evaluate(
        f"fetch('/ui/api/v1/usage?key_id={other['id']}').then(r => r.json()).then(v => v.data)")
    assert rows and all(r["key_id"] == mine["id"] for r in rows)


def test_traces_list_and_detail(page, base, master):
    # This key's traces keep the bodies (`traces` on the key: capture full).
    _, k = call(base, "POST", "/v1/keys", master, {"name": "traced", "traces": {"capture": "full"}})
    # An OpenAI client on an Anthropic model: a translated request.
    assert chat_with_id(base, k["key"], "claude-sonnet-4-6", "console-trace-1") == 200
    login(page, base, master)
    # From the key's detail to its traces.
    page.goto(base + f"/ui/keys?id={k['id']}")
    page.wait_for_selector("#key-traces")
    page.click("#key-traces")
    page.wait_for_load_state("networkidle")
    assert page.url.endswith(f"/ui/traces?key_id={k['id']}")
    assert wait_for(page, lambda: "console-trace-1" in (page.text_content("#list") or ""))
    row = page.text_content("#list")
    assert k["id"] in row and "claude-sonnet-4-6" in row and "anthropic" in row
    docs_shot(page, "traces")

    page.click("#list a.trace >> text=console-trace-1")
    page.wait_for_selector("#timeline[data-points]")
    assert page.url.endswith("/ui/traces?id=console-trace-1")
    assert page.text_content("#detail-id") == "console-trace-1"
    assert "answeredHTTP 200" in page.text_content("#attempts")
    cards = page.text_content("#detail-cards")
    assert "Attempts1" in cards and "chat → anthropic" in cards
    assert bar_pixels(page, "#timeline") > 0
    # The bodies: collapsed, then shown as text.
    assert page.eval_on_selector("#body-request", "d => d.open") is False
    assert not page.is_visible("#body-request pre")
    page.click("#body-request summary")
    assert page.is_visible("#body-request pre")
    assert '"content":"hi"' in page.text_content("#body-request pre")
    assert '"max_tokens"' in page.text_content("#body-upstream pre")
    assert page.text_content("#body-response summary") == "Answer"
    assert page.text_content("#error") == ""
    docs_shot(page, "trace")


def test_key_holder_sees_only_their_own_traces(page, base, master):
    _, mine = call(base, "POST", "/v1/keys", master, {"name": "traces-mine"})
    _, other = call(base, "POST", "/v1/keys", master, {"name": "traces-other"})
    assert chat_with_id(base, mine["key"], "gpt-4o-mini", "holder-trace-mine") == 200
    assert chat_with_id(base, other["key"], "gpt-4o-mini", "holder-trace-other") == 200
    # Both stored before the key holder looks (the writer stores in batches).
    for rid in ["holder-trace-mine", "holder-trace-other"]:
        for _ in range(40):
            if call(base, "GET", f"/v1/traces/{rid}", master)[0] == 200:
                break
            time.sleep(0.25)
        else:
            raise AssertionError(f"no trace for {rid}")

    login(page, base, mine["key"])
    nav = page.eval_on_selector_all("nav a", "as => as.map(a => a.textContent)")
    assert nav == ["My key", "Traces"]
    page.goto(base + "/ui/traces")
    page.wait_for_selector("#list a.trace")
    listed = page.eval_on_selector_all("#list a.trace", "as => as.map(a => a.textContent)")
    assert listed == ["holder-trace-mine"]
    assert other["id"] not in page.text_content("#list")
    page.goto(base + "/ui/traces?id=holder-trace-other")
    page.wait_for_load_state("networkidle")
    assert "No trace" in page.text_content("#error")
    assert page.is_hidden("#detail")


def test_hostile_key_name_renders_as_text(page, base, master):
    _, k = call(base, "POST", "/v1/keys", master, {"name": HOSTILE})
    login(page, base, master)
    page.goto(base + f"/ui/keys?id={k['id']}")
    page.wait_for_selector("#detail-name")
    assert page.text_content("#detail-name") == HOSTILE
    page.fill("#search input[name=q]", "onerror")
    page.click("#search button")
    page.wait_for_selector(f"#list button[data-open='{k['id']}']")
    assert page.text_content(f"#list button[data-open='{k['id']}']") == HOSTILE
    assert page.eval_on_selector_all("main img", "is => is.length") == 0
    page.wait_for_timeout(300)  # give a (wrongly) injected onerror the chance to fire
    assert page.dialogs == []


def test_operator_edits_a_user(page, base, master):
    assert call(base, "POST", "/v1/users", master, {"user_id": "edit-me", "max_budget": 2})[0] == 201
    login(page, base, master)
    page.goto(base + "/ui/users")
    page.click("#list button[data-open='edit-me']")
    page.wait_for_selector("#edit")
    assert float(page.input_value("#edit input[name=max_budget]")) == 2
    page.fill("#edit input[name=alias]", "Edited Person")
    page.fill("#edit input[name=max_budget]", "7.5")
    page.fill("#edit input[name=budget_duration]", "monthly")
    page.fill("#edit textarea[name=metadata]", '{"team": "research"}')
    page.click("#edit button[type=submit]")
    page.wait_for_selector("#detail-standing >> text=of $7.50")
    assert page.text_content("#error") == ""
    # Bad JSON is refused on the page, as text; nothing is sent.
    page.fill("#edit textarea[name=metadata]", "{not json")
    page.click("#edit button[type=submit]")
    page.wait_for_selector("#error >> text=not valid JSON")

    page.reload()
    page.wait_for_load_state("networkidle")
    assert "$7.50" in page.text_content("#list")
    page.click("#list button[data-open='edit-me']")
    page.wait_for_selector("#edit")
    assert float(page.input_value("#edit input[name=max_budget]")) == 7.5
    assert page.input_value("#edit input[name=budget_duration]") == "monthly"
    assert page.input_value("#edit input[name=alias]") == "Edited Person"
    assert json.loads(page.input_value("#edit textarea[name=metadata]")) == {"team": "research"}
    _, u = call(base, "GET", "/v1/users/edit-me", master)
    assert float(u["limits"]["max_budget"]) == 7.5 and u["metadata"] == {"team": "research"}


def test_operator_deletes_a_user(page, base, master):
    assert call(base, "POST", "/v1/users", master, {"user_id": "delete-me"})[0] == 201
    _, k = call(base, "POST", "/v1/keys", master, {"name": "of-delete-me", "user_id": "delete-me"})
    assert chat(base, k["key"])[0] == 200
    login(page, base, master)
    page.goto(base + "/ui/users")
    page.click("#list button[data-open='delete-me']")
    page.wait_for_selector("#delete")
    page.click("#delete")
    assert page.text_content("#delete").startswith("Confirm delete")
    assert call(base, "GET", "/v1/users/delete-me", master)[0] == 200  # one click deletes nothing
    page.click("#delete")
    page.wait_for_selector("#detail", state="hidden")
    assert "delete-me" not in page.text_content("#list")
    assert page.text_content("#error") == ""
    assert call(base, "GET", "/v1/users/delete-me", master)[0] == 404
    assert chat(base, k["key"])[0] == 401
    page.reload()
    page.wait_for_load_state("networkidle")
    assert "delete-me" not in page.text_content("#list")


def test_operator_sets_key_metadata_rendered_as_text(page, base, master):
    _, k = call(base, "POST", "/v1/keys", master, {"name": "meta-key"})
    login(page, base, master)
    page.goto(base + f"/ui/keys?id={k['id']}")
    page.wait_for_selector("#edit textarea[name=metadata]")
    # Not an object: the API's refusal is shown as text.
    page.fill("#edit textarea[name=metadata]", "[1, 2]")
    page.click("#edit button[type=submit]")
    page.wait_for_selector("#error >> text='metadata' must be an object.")
    page.fill("#edit textarea[name=metadata]", json.dumps({"note": HOSTILE}))
    page.click("#edit button[type=submit]")
    page.wait_for_selector("#detail-metadata >> text=onerror")
    assert page.text_content("#error") == ""

    page.reload()
    page.wait_for_selector("#detail-metadata")
    assert json.loads(page.text_content("#detail-metadata")) == {"note": HOSTILE}
    assert json.loads(page.input_value("#edit textarea[name=metadata]")) == {"note": HOSTILE}
    assert page.eval_on_selector_all("main img", "is => is.length") == 0
    page.wait_for_timeout(300)  # give a (wrongly) injected onerror the chance to fire
    assert page.dialogs == []
    assert call(base, "GET", f"/v1/keys/{k['id']}", master)[1]["metadata"] == {"note": HOSTILE}


def test_operator_manages_budgets_and_price_overrides(page, base, master):
    login(page, base, master)
    page.goto(base + "/ui/budgets")
    page.wait_for_load_state("networkidle")
    page.fill("#create-budget input[name=budget_id]", "team-ui")
    page.fill("#create-budget input[name=name]", HOSTILE)
    page.fill("#create-budget input[name=max_budget]", "40")
    page.fill("#create-budget input[name=budget_duration]", "monthly")
    page.click("#create-budget button[type=submit]")
    page.wait_for_selector("#budgets button[data-open='team-ui']")
    assert HOSTILE in page.text_content("#budgets")  # as text: no image element
    assert page.eval_on_selector_all("main img", "is => is.length") == 0

    # Edit it; the new limit is there after a reload.
    page.click("#budgets button[data-open='team-ui']")
    page.wait_for_selector("#edit-budget")
    page.fill("#edit-budget input[name=max_budget]", "55")
    page.select_option("#edit-budget select[name=budget_alignment]", "rolling")
    page.click("#edit-budget button[type=submit]")
    page.wait_for_selector("#budgets >> text=$55.00")
    page.reload()
    page.wait_for_selector("#budgets button[data-open='team-ui']")
    row = page.text_content("#budgets tbody")
    assert "$55.00" in row and "rolling" in row
    _, b = call(base, "GET", "/v1/budgets/team-ui", master)
    assert float(b["max_budget"]) == 55 and b["budget_alignment"] == "rolling"

    # A budget in use cannot be deleted: the API's refusal is shown as text.
    assert call(base, "POST", "/v1/users", master, {"user_id": "budgeted", "budget_id": "team-ui"})[0] == 201
    page.click("#budgets button[data-open='team-ui']")
    page.click("#delete-budget")
    assert page.text_content("#delete-budget") == "Confirm delete"
    page.click("#delete-budget")
    page.wait_for_selector("#error >> text=is in use")
    assert call(base, "PATCH", "/v1/users/budgeted", master, {"budget_id": None})[0] == 200
    page.reload()
    page.click("#budgets button[data-open='team-ui']")
    page.click("#delete-budget")
    page.click("#delete-budget")
    page.wait_for_selector("#budget-detail", state="hidden")
    assert page.text_content("#error") == ""
    assert "team-ui" not in page.text_content("#budgets")
    assert call(base, "GET", "/v1/budgets/team-ui", master)[0] == 404

    # A price override, listed beside the built-in table, then removed.
    assert "No overrides" in page.text_content("#overrides")
    page.fill("#set-price input[name=model_key]", "openai:ui-priced-model")
    page.fill("#set-price input[name=input]", "1.25")
    page.fill("#set-price input[name=output]", "9")
    page.click("#set-price button[type=submit]")
    page.wait_for_selector("#overrides >> text=openai:ui-priced-model")
    page.reload()
    page.wait_for_selector("#overrides >> text=openai:ui-priced-model")
    over = page.text_content("#overrides tbody")
    assert "1.25" in over and "9" in over
    page.fill("#search input[name=q]", "ui-priced")
    prices = page.text_content("#prices tbody")
    assert "openai:ui-priced-model" in prices and "api" in prices
    page.fill("#search input[name=q]", "gpt-4o-mini")
    assert "default" in page.text_content("#prices tbody")  # the built-in table, still shown
    _, p = call(base, "GET", "/v1/pricing/openai:ui-priced-model", master)
    assert float(p["input"]) == 1.25 and float(p["output"]) == 9
    page.click("#overrides button[data-remove='openai:ui-priced-model']")
    page.click("#overrides button[data-remove='openai:ui-priced-model']")
    page.wait_for_selector("#overrides >> text=No overrides")
    assert page.text_content("#error") == ""
    assert call(base, "GET", "/v1/pricing/openai:ui-priced-model", master)[0] == 404


class _Evil(http.server.BaseHTTPRequestHandler):
    target = ""

    def do_GET(self):
        body = f"""<!doctype html><form id=f method=post action="{self.target}/ui/api/v1/keys"
            enctype="text/plain"><input name='{{"name":"csrf-probe","x":"' value='"}}'></form>
            <script>document.getElementById('f').submit()</script>""".encode()
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def test_cross_origin_form_post_is_refused(page, base, master):
    login(page, base, master)
    _Evil.target = base
    evil = http.server.HTTPServer(("127.0.0.1", 0), _Evil)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        # Another port on the same host: the same site, so the SameSite cookie is sent and
        # only the Origin and CSRF token checks stand in the way.
        with page.expect_navigation(url=base + "/ui/api/v1/keys"):
            page.goto(f"http://127.0.0.1:{evil.server_address[1]}/")
        assert "Cross-site request refused" in page.content()
    finally:
        evil.shutdown()
    _, keys = call(base, "GET", "/v1/keys?q=csrf-probe", master)
    assert keys["data"] == []


def test_zz_login_rate_limit(page, base, master):
    """Last: after this the address is refused for the rest of the minute."""
    # Ten failures must fall in one minute window (the limit counts per calendar minute).
    if time.time() % 60 > 45:
        time.sleep(61 - time.time() % 60)
    for _ in range(10):
        login(page, base, "tg-wrong-key")
        assert "That key is not valid." in page.text_content(".error")
    login(page, base, master)
    assert "Too many login attempts" in page.text_content(".error")
    assert page.url.endswith("/ui/login")
    page.goto(base + "/ui/overview")
    assert page.url.endswith("/ui/login")
