"""The web console in headless Chromium (issue 16), against the group and
the `trackc serve` that tests/console.rs started; it hands over their
addresses, the tokens and the counts computed from the databases in the
JSON file TRACKC_CONSOLE_CONFIG names."""

import json
import os
import signal
import time
import urllib.request

import pytest
from playwright.sync_api import expect, sync_playwright
from prometheus_client.parser import text_string_to_metric_families

CONFIG = json.load(open(os.environ["TRACKC_CONSOLE_CONFIG"]))
SHOTS = CONFIG["screenshots"]


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CONFIG["chromium"],
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield b
        b.close()


class Console:
    """A signed-in browser context; every page's console errors are kept."""

    def __init__(self, browser, base, token, place):
        self.base, self.place = base, place
        self.context = browser.new_context(viewport={"width": 1300, "height": 900})
        self.page = self.context.new_page()
        self.errors = []
        self.page.on(
            "console",
            lambda m: self.errors.append(f"{self.page.url}: {m.text}") if m.type == "error" else None,
        )
        self.page.on("pageerror", lambda e: self.errors.append(f"{self.page.url}: {e}"))
        self.open("/signin")
        self.shot("signin")
        self.page.fill("input[name=token]", token)
        self.page.click("button:has-text('Sign in')")
        self.page.wait_for_url(base + "/")

    def open(self, path):
        response = self.page.goto(self.base + path)
        return response

    def shot(self, name):
        self.page.screenshot(path=f"{SHOTS}/{self.place}-{name}.png", full_page=True)

    def csrf(self):
        return self.page.locator("form.signout input[name=csrf]").get_attribute("value")

    def close(self):
        assert self.errors == [], self.errors
        self.context.close()


def metrics(url, token):
    request = urllib.request.Request(url + "/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.read().decode())
            for s in family.samples
        }


def check_track_page(c, track, expected):
    c.open(f"/tracks/{track}")
    for step, records in expected["steps"].items():
        if step == "(ended)":
            continue
        box = c.page.locator(f"svg.track-graph g.step[data-step='{step}'] .records")
        expect(box).to_have_attribute("data-records", str(records))
        expect(c.page.locator(f"#steps tr[data-step='{step}'] .records")).to_have_text(str(records))
    # An arrow per moving rule, with how often it fired in the last day.
    day = sum(n for key, n in expected["record_steps"].items() if key == "start/1")
    expect(c.page.locator("svg.track-graph g.edge[data-step='start'][data-rule='1'] text")).to_contain_text(f"{day}/d")
    expect(c.page.locator("pre.source .kw").first).to_be_visible()
    c.shot("track")


def check_record_page(c, track, key):
    c.open("/")
    c.page.fill("form.lookup input[name=track]", track)
    c.page.fill("form.lookup input[name=key]", key)
    c.page.click("form.lookup button")
    expect(c.page.locator("#now")).to_contain_text("In step waiting")
    expect(c.page.locator("#decisions")).to_contain_text("rule 1: when n % 3 = 0")
    expect(c.page.locator("#decisions")).to_contain_text("read: n = 3")
    c.shot("record")


def test_metrics_parse_and_match_the_database():
    group = CONFIG["group"]
    per_node = [metrics(n["url"], CONFIG["tokens"]["viewer"]) for n in group["nodes"]]
    first = per_node[0]
    assert first[("trackc_db_up", ())] == 1
    for n in group["nodes"]:
        assert first[("trackc_node_up", (("node", str(n["id"])),))] == 1
    owners = [k for k in first if k[0] == "trackc_track_owner"]
    assert len(owners) == 1 and dict(owners[0][1])["track"] == "journey"
    for row in group["expected"]["outbox"]:
        key = ("trackc_outbox_rows", (("kind", row["kind"]), ("state", row["state"])))
        assert first[key] == row["rows"], key
    assert first[("trackc_events_pending", ())] == 0
    # Record steps: each node counts its own; together, the history's.
    total = {}
    for m in per_node:
        for (name, labels), value in m.items():
            if name == "trackc_record_steps_total":
                labels = dict(labels)
                key = f"{labels['step']}/{labels['rule']}"
                total[key] = total.get(key, 0) + value
    assert total == group["expected"]["record_steps"], total
    runs = sum(v for (name, _), v in first.items() if name == "trackc_run_duration_seconds_count")
    owner_runs = sum(
        v for m in per_node for (name, _), v in m.items() if name == "trackc_run_duration_seconds_count"
    )
    assert owner_runs >= 1, (runs, owner_runs)


def test_the_group_console(browser):
    group = CONFIG["group"]
    nodes = group["nodes"]
    viewer = Console(browser, nodes[0]["url"], CONFIG["tokens"]["viewer"], "group")
    page = viewer.page
    rows = page.locator("#nodes tbody tr")
    expect(rows).to_have_count(3)
    expect(page.locator("#nodes tr[data-node='1'] .master")).to_have_text("master")
    decided = sum(int(t) for t in page.locator("#nodes td.executed").all_text_contents())
    assert decided == group["expected"]["blocks"], decided
    for n in nodes:
        expect(page.locator(f"#nodes tr[data-node='{n['id']}'] .state")).to_have_text("alive")
    expect(page.locator("#recent")).to_contain_text("node 1 (node) · claim track journey")
    expect(page.locator("#recent")).to_contain_text("deploy")
    viewer.shot("group")
    # A node killed now shows as unavailable without a reload.
    os.kill(nodes[2]["pid"], signal.SIGKILL)
    started = time.monotonic()
    expect(page.locator("#nodes tr[data-node='3'] .state")).to_have_text("unavailable", timeout=30_000)
    print(f"node 3 shown unavailable {time.monotonic() - started:.1f} s after kill -9")
    viewer.shot("group-node-down")
    check_track_page(viewer, group["track"], group["expected"])
    check_record_page(viewer, group["track"], group["waiting_key"])
    # As a viewer: no retry button, and the POST is refused.
    viewer.open("/outbox")
    expect(page.locator(f"#outbox tr[data-id='{group['parked']}'] .state")).to_have_text("parked")
    expect(page.locator("button.retry")).to_have_count(0)
    viewer.shot("outbox")
    refused = page.request.post(
        nodes[0]["url"] + "/console/retry",
        form={"csrf": viewer.csrf(), "id": group["parked"]},
    )
    assert refused.status == 403, refused.status
    assert "needs the operator role" in refused.text()
    viewer.open("/plan")
    viewer.shot("plan")
    viewer.close()
    # As an operator: a form without the session's CSRF token is refused;
    # then retry the parked webhook and see it delivered.
    operator = Console(browser, nodes[0]["url"], CONFIG["tokens"]["operator"], "group-operator")
    forged = operator.page.request.post(nodes[0]["url"] + "/console/retry", form={"id": group["parked"]})
    assert forged.status == 403, forged.status
    assert "not from this session" in forged.text()
    operator.open("/outbox")
    operator.page.locator(f"#outbox tr[data-id='{group['parked']}'] button.retry").click()
    operator.page.wait_for_url("**/outbox")
    state = operator.page.locator(f"#outbox tr[data-id='{group['parked']}'] .state")
    deadline = time.monotonic() + 30
    while state.text_content() != "delivered" and time.monotonic() < deadline:
        time.sleep(0.3)
        operator.open("/outbox")
    expect(state).to_have_text("delivered")
    operator.shot("outbox-retried")
    operator.close()


def test_trackc_serve(browser):
    serve = CONFIG["serve"]
    # An author: the plan page plans (a plan is the first half of a deploy).
    c = Console(browser, serve["url"], CONFIG["tokens"]["author"], "serve")
    expect(c.page.locator("h1")).to_have_text("One node (trackc serve)")
    expect(c.page.locator("#tracks tr[data-track='journey']")).to_have_count(1)
    c.shot("group")
    check_track_page(c, serve["track"], serve["expected"])
    check_record_page(c, serve["track"], serve["waiting_key"])
    c.open("/outbox")
    c.shot("outbox")
    c.open("/plan")
    # Pick the file: the page's script reads it into the text box.
    v2 = os.path.join(os.path.dirname(__file__), "..", "fixtures", "console", "journey_v2.dt")
    c.page.set_input_files("#plan-file", v2)
    expect(c.page.locator("textarea[name=text]")).to_have_value(open(v2).read())
    expect(c.page.locator("#plan-form input[name=name]")).to_have_value("journey_v2.dt")
    c.page.click("#plan-form button")
    expect(c.page.locator("h2").first).to_contain_text("journey: changed")
    c.shot("plan")
    # Deploy it from there (an author may).
    c.page.click("button:has-text('Deploy')")
    expect(c.page.locator("#message")).to_contain_text("deploy 2: changed journey")
    c.open("/tracks/journey")
    expect(c.page.locator("#versions")).to_contain_text("author (author)")
    # The difference between the two deploys: the webhook rule went.
    c.page.click("text=diff with 1")
    expect(c.page.locator("pre.diff .del").first).to_be_visible()
    expect(c.page.locator("pre.diff")).to_contain_text("- ")
    deleted = " ".join(c.page.locator("pre.diff .del").all_text_contents())
    assert "gone-once" in deleted, deleted
    c.shot("track-diff")
    c.close()
