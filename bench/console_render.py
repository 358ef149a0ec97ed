"""bench/console.sh's browser part: sign in, then load each console page
REPEATS times in headless Chromium; per page the bytes transferred, the
requests, and the medians of time to first byte, first contentful paint
and load; and the HTML alone fetched without a browser, for its server
time."""

import statistics
import sys
import time
import urllib.request

from playwright.sync_api import sync_playwright

base, token, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
PAGES = {
    "group": "/",
    "track": "/tracks/onboarding",
    "record": "/record?track=onboarding&key=42",
    "outbox": "/outbox",
    "plan": "/plan",
}
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
    context = browser.new_context()
    page = context.new_page()
    page.goto(base + "/signin")
    page.fill("input[name=token]", token)
    page.click("button:has-text('Sign in')")
    page.wait_for_url(base + "/")
    cookie = "; ".join(f"{c['name']}={c['value']}" for c in context.cookies())
    for name, path in PAGES.items():
        ttfb, fcp, load, sizes, curl = [], [], [], [], []
        for _ in range(repeats):
            fresh = page  # each load a new navigation; assets from the cache after the first
            fresh.goto(base + path, wait_until="load")
            timing = fresh.evaluate("""async () => {
                // First contentful paint, once Chromium reports it (buffered).
                const paintAt = await new Promise(resolve => {
                    new PerformanceObserver(list => {
                        const e = list.getEntriesByName('first-contentful-paint')[0];
                        if (e) resolve(e.startTime);
                    }).observe({type: 'paint', buffered: true});
                    setTimeout(() => resolve(null), 3000);
                });
                const nav = performance.getEntriesByType('navigation')[0];
                const bytes = performance.getEntriesByType('resource')
                    .reduce((n, r) => n + r.decodedBodySize, nav.decodedBodySize);
                const requests = performance.getEntriesByType('resource').length + 1;
                return {ttfb: nav.responseStart, fcp: paintAt,
                        load: nav.loadEventEnd, bytes, requests};
            }""")
            ttfb.append(timing["ttfb"])
            fcp.append(timing["fcp"])
            load.append(timing["load"])
            sizes.append((timing["bytes"], timing["requests"]))
            request = urllib.request.Request(base + path, headers={"Cookie": cookie})
            started = time.perf_counter()
            urllib.request.urlopen(request).read()
            curl.append((time.perf_counter() - started) * 1000)
        bytes_, requests = sizes[-1]
        print(f"RESULT page={name} bytes={bytes_} requests={requests} "
              f"ttfb_ms={statistics.median(ttfb):.1f} fcp_ms={statistics.median([f for f in fcp if f is not None] or [float('nan')]):.1f} painted={sum(f is not None for f in fcp)}/{repeats} "
              f"load_ms={statistics.median(load):.1f} curl_ms={statistics.median(curl):.1f}")
    browser.close()
