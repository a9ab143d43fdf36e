"""The console's only assets, kept in the package as text: no CDN, no front-end build.

The script is small on purpose. It follows /console/events (server-sent events, sent when the read
model's incidents change) and then re-fetches the page it shows, swapping in the parts that
change (list rows, timeline, facts, steps, alerts, approvals, overview tiles) from HTML the server rendered and escaped; it sends
the action and silence forms with fetch so the page stays where it is. Without it, every form
still works as a plain POST followed by a redirect.
"""

from __future__ import annotations

CSS = """
:root { --fg: #1d232b; --muted: #67707c; --line: #d9dee4; --bg: #f6f7f9; --accent: #2c5fb3; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; gap: 1.5em; align-items: center; padding: .6em 1.2em; background: #1d232b; color: #fff; }
header a { color: #fff; text-decoration: none; margin-right: 1em; }
header .brand { font-weight: 700; letter-spacing: .02em; }
header nav { display: flex; align-items: center; flex: 1; }
header .who { margin-left: auto; margin-right: .8em; color: #c9d1db; }
main { padding: 1em 1.2em 3em; }
h1 { font-size: 1.35em; margin: .2em 0 .6em; word-break: break-word; }
h2 { font-size: 1.1em; margin: 1.4em 0 .5em; }
table { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid var(--line); }
th, td { text-align: left; padding: .35em .55em; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: #eef1f4; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.empty, p.empty { color: var(--muted); }
code { font-size: .92em; word-break: break-all; }
a { color: var(--accent); }
form.inline { display: inline; }
.filters { display: flex; gap: .7em; align-items: center; margin-bottom: .8em; flex-wrap: wrap; }
.filters input[type=search] { min-width: 22em; padding: .3em; }
.check { color: var(--muted); }
.pager { margin-top: .6em; display: flex; gap: .8em; align-items: center; }
.state, .sev, .badge { display: inline-block; padding: 0 .45em; border-radius: 3px; font-size: .88em; }
.state.open { background: #fde2e1; } .state.acknowledged { background: #fff1c7; }
.state.mitigating { background: #e3ecff; } .state.resolved, .state.expired { background: #e1f4e4; }
.state.closed { background: #eceff2; } .state.active { background: #fff1c7; } .state.pending { background: #e3ecff; }
.sev.critical { background: #b3261e; color: #fff; } .sev.error { background: #e4572e; color: #fff; }
.sev.warning { background: #f2c14e; } .sev.info { background: #cfe3f7; }
.badge { background: #eceff2; margin-right: .3em; }
.badge.silenced { background: #d9d2f5; } .badge.flapping { background: #ffd9b3; } .badge.inhibited { background: #d2ecf5; }
.label { display: inline-block; margin: 0 .35em .2em 0; padding: 0 .35em; background: #eef1f4; border-radius: 3px; }
.label .k { color: var(--muted); }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .25em 1em; background: #fff;
  border: 1px solid var(--line); padding: .7em 1em; margin: 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; word-break: break-word; }
dl.annotations { margin: 0; } dl.annotations dt { color: var(--muted); font-size: .88em; }
dl.annotations dd { margin: 0 0 .2em; word-break: break-word; }
.actions { display: flex; gap: .6em; flex-wrap: wrap; align-items: center; margin: .9em 0; }
.actions form { display: flex; gap: .3em; }
.status { color: var(--muted); margin: 0; }
.error { color: #b3261e; }
.login, .silence-form { display: flex; flex-direction: column; gap: .6em; max-width: 36em; background: #fff;
  padding: 1em; border: 1px solid var(--line); }
.silence-form textarea, .silence-form input, .login input { width: 100%; font: inherit; padding: .3em; }
.buttons { display: flex; gap: .6em; }
.live { position: fixed; right: 1em; bottom: .6em; color: var(--muted); font-size: .85em; }
button { font: inherit; padding: .25em .8em; cursor: pointer; }
.step { display: inline-block; padding: 0 .45em; border-radius: 3px; font-size: .88em; background: #eceff2; }
.step.awaiting_approval { background: #fff1c7; } .step.succeeded, .step.approved { background: #e1f4e4; }
.step.failed, .step.denied, .step.refused, .step.expired { background: #fde2e1; }
.step.started, .step.requested { background: #e3ecff; }
td.decide form { display: flex; gap: .3em; margin-bottom: .25em; }
.tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(15em, 1fr)); gap: .8em; }
.tile { background: #fff; border: 1px solid var(--line); padding: .7em 1em; }
.tile-label { color: var(--muted); font-size: .9em; }
.tile-value { font-size: 1.6em; font-variant-numeric: tabular-nums; }
.hint { color: var(--muted); }
"""

JS = r"""
"use strict";
(function () {
  const page = document.body.dataset.page;
  const live = document.getElementById("live");
  const say = (text) => { if (live) live.textContent = text; };
  // Parts of a page that a live update replaces with the server's freshly rendered (escaped) HTML.
  const PARTS = [
    "incident-rows", "timeline-rows", "facts", "incident-alerts", "silences", "steps", "approvals-list", "overview",
  ];
  let refreshing = false;
  let again = false;

  async function refresh() {
    if (refreshing) { again = true; return; }
    refreshing = true;
    try {
      const resp = await fetch(window.location.href, { credentials: "same-origin", headers: { "X-Console-Live": "1" } });
      if (!resp.ok) { say("live update failed: HTTP " + resp.status); return; }
      const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
      for (const id of PARTS) {
        const fresh = doc.getElementById(id);
        const here = document.getElementById(id);
        // A part the operator is typing in (a note for an approval) is left alone until the next update.
        if (fresh && here && !here.contains(document.activeElement)) here.replaceWith(document.importNode(fresh, true));
      }
      say("updated " + new Date().toLocaleTimeString());
    } finally {
      refreshing = false;
      if (again) { again = false; setTimeout(refresh, 300); }
    }
  }

  if (["incidents", "incident", "silences", "approvals", "overview"].includes(page)) {
    const events = new EventSource("/console/events");
    events.addEventListener("change", (ev) => {
      const data = JSON.parse(ev.data);
      if (page === "incident") {
        const h1 = document.querySelector("h1[data-incident]");
        if (h1 && !data.incidents.includes(h1.dataset.incident) && !data.alerts) return;
      }
      refresh();
    });
    events.addEventListener("open", () => say("live"));
    events.onerror = () => say("live updates reconnecting…");
  }

  // Incident actions: sent with fetch; the timeline shows the outcome when the correlator applies it.
  for (const form of document.querySelectorAll("form.action")) {
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const status = document.getElementById("action-status");
      const body = new URLSearchParams(new FormData(form));
      const resp = await fetch(form.action, {
        method: "POST", body, credentials: "same-origin", headers: { "Accept": "application/json" },
      });
      let text = "HTTP " + resp.status;
      try { text = (await resp.json()).message; } catch (e) { /* not JSON */ }
      if (status) status.textContent = text;
    });
  }

  // The silence preview: the matching active alerts, rendered by the server, without leaving the form.
  const preview = document.getElementById("preview-button");
  if (preview) {
    preview.addEventListener("click", async (ev) => {
      ev.preventDefault();
      const form = document.getElementById("silence-form");
      const body = new URLSearchParams(new FormData(form));
      const resp = await fetch("/console/silences/preview", {
        method: "POST", body, credentials: "same-origin", headers: { "X-Console-Fragment": "1" },
      });
      const box = document.getElementById("preview");
      const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
      box.replaceChildren(...Array.from(doc.body.childNodes).map((n) => document.importNode(n, true)));
    });
  }
})();
"""
