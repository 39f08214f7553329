// The operator dashboard: a read-only view of the queue, refreshed every 5 s with fetch.
// No framework and no build step. Every piece of server text reaches the page through
// textContent (never innerHTML), so job details and reasons cannot inject markup.
"use strict";

(function () {
  const REFRESH_MS = 5000;
  const STATES = ["queued", "pulled", "preprocessing", "running", "postprocessing",
    "finished", "error", "cancelled"];
  const SVG = "http://www.w3.org/2000/svg";
  const expanded = new Set(); // runtime_details the operator opened, kept across refreshes

  // -- small helpers ---------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "testid") node.dataset.testid = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child)); // strings become text nodes
    }
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    if (seconds < 60) return `${Math.round(seconds)} s`;
    if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
    if (seconds < 86400) return `${(seconds / 3600).toFixed(1)} h`;
    return `${(seconds / 86400).toFixed(1)} d`;
  }

  function clock(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleTimeString([], { hour12: false });
  }

  function stamp(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    return isNaN(d) ? iso : `${d.toLocaleDateString()} ${clock(iso)}`;
  }

  // "06:58:00 (2 min ago)", measured against the server's clock so a skewed laptop agrees.
  function when(iso, nowIso) {
    const then = Date.parse(iso), now = Date.parse(nowIso);
    if (isNaN(then) || isNaN(now)) return clock(iso);
    return `${clock(iso)} (${age(Math.max(0, (now - then) / 1000))} ago)`;
  }

  function mib(value) { // the unit workers report and the reasons use, grouped like them
    return `${String(value).replace(/\B(?=(\d{3})+(?!\d))/g, "\u2009")} MiB`;
  }

  function hardware(h) {
    const parts = [];
    if (h.cpu_cores) parts.push(`${h.cpu_cores} cores`);
    if (h.memory) parts.push(mib(h.memory));
    const gpu = [h.gpu_model, h.gpu_archi].filter(Boolean).join(" ");
    if (gpu || h.gpu_mem) parts.push(["GPU", gpu, h.gpu_mem ? mib(h.gpu_mem) : ""].filter(Boolean).join(" "));
    return parts.length ? parts.join(" · ") : "any";
  }

  function jobLink(id, testid) {
    return el("a", { href: `#/jobs/${encodeURIComponent(id)}`, testid }, `#${id}`);
  }

  function emptyRow(tbody, columns, text) {
    tbody.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: columns }, text)));
  }

  function details(text, key) {
    if (!text) return el("span", { class: "muted" }, "—");
    const pre = el("pre", { class: expanded.has(key) ? "details" : "details clipped" }, text);
    const long = text.length > 160 || text.split("\n").length > 3;
    if (!long) return pre;
    const toggle = el("button", { type: "button", class: "link" }, expanded.has(key) ? "less" : "more");
    toggle.addEventListener("click", () => {
      const open = !expanded.has(key);
      if (open) expanded.add(key); else expanded.delete(key);
      pre.classList.toggle("clipped", !open);
      toggle.textContent = open ? "less" : "more";
    });
    return el("div", {}, pre, toggle);
  }

  // -- fetching --------------------------------------------------------------------------

  class HttpError extends Error {
    constructor(status, detail) { super(detail); this.status = status; }
  }

  async function detailOf(response) {
    const text = await response.text();
    try { return JSON.parse(text).detail || text; } catch (_) { /* not JSON: maybe an HTML page */ }
    // Parsed, never inserted: only the page's text is kept (DOMParser runs no scripts).
    const words = new DOMParser().parseFromString(text, "text/html").body.textContent.trim();
    return words.replace(/\s+/g, " ").slice(0, 300) || response.statusText;
  }

  async function getJSON(url) {
    const response = await fetch(url, {
      credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" },
    });
    if (response.status === 401) { // session expired or signed out elsewhere
      window.location.assign("/ui/login");
      throw new HttpError(401, "signed out");
    }
    if (!response.ok) throw new HttpError(response.status, await detailOf(response));
    return response.json();
  }

  function showBanner(message) {
    const banner = document.getElementById("banner");
    banner.textContent = message;
    banner.hidden = !message;
  }

  function refreshed() {
    const stampNode = document.getElementById("last-refresh");
    const now = new Date();
    stampNode.textContent = now.toLocaleTimeString([], { hour12: false });
    stampNode.setAttribute("datetime", now.toISOString());
  }

  // -- the overview ----------------------------------------------------------------------

  function renderTiles(counts) {
    const tiles = document.getElementById("tiles");
    if (!tiles.childElementCount) {
      for (const state of STATES) {
        tiles.append(el("div", { class: `tile state-${state}` },
          el("span", { class: "count", testid: `state-${state}` }, "—"),
          el("span", { class: "label" }, state)));
      }
    }
    for (const state of STATES) {
      const count = counts[state] || 0;
      const node = tiles.querySelector(`[data-testid="state-${state}"]`);
      node.textContent = String(count);
      node.parentElement.classList.toggle("zero", count === 0);
    }
  }

  function renderChart(points) {
    const box = document.getElementById("chart");
    // Drawn at the box's own width, so labels keep their size on a phone and on a wall screen.
    const W = Math.max(320, Math.round(box.clientWidth || 720)), H = 230;
    const left = 48, right = 16, top = 12, bottom = 36;
    const max = Math.max(1, ...points.map((p) => Math.max(p.pulled, p.finished)));
    const step = (W - left - right) / Math.max(1, points.length - 1);
    const x = (i) => left + i * step;
    const y = (v) => top + (H - top - bottom) * (1 - v / max);
    const total = (k) => points.reduce((sum, p) => sum + p[k], 0);

    const chart = svg("svg", {
      viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": "chart-title chart-desc",
      "data-testid": "throughput-chart", class: "chart-svg",
    });
    chart.append(svg("title", { id: "chart-title" }, "Jobs pulled and finished per minute, last hour"));
    chart.append(svg("desc", { id: "chart-desc" },
      `${total("pulled")} pulled and ${total("finished")} finished in the last hour`));
    for (const v of [0, max / 2, max]) { // y axis: zero, middle, top
      chart.append(svg("line", { x1: left, x2: W - right, y1: y(v), y2: y(v), class: "grid" }));
      chart.append(svg("text", { x: left - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" },
        Number.isInteger(v) ? String(v) : v.toFixed(1)));
    }
    points.forEach((p, i) => { // x axis: a clock time every 15 minutes, and the latest
      if (i % 15 !== 0 && i !== points.length - 1) return;
      const d = new Date(p.minute);
      const label = isNaN(d) ? "" : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
      chart.append(svg("text", { x: x(i), y: H - bottom + 16, class: "axis", "text-anchor": "middle" }, label));
    });
    chart.append(svg("text", { x: (left + W - right) / 2, y: H - 2, class: "axis", "text-anchor": "middle" }, "time"));
    chart.append(svg("text", { x: 12, y: (top + H - bottom) / 2, class: "axis", "text-anchor": "middle",
      transform: `rotate(-90 12 ${(top + H - bottom) / 2})` }, "jobs / min"));
    for (const series of ["pulled", "finished"]) {
      const path = points.map((p, i) => `${x(i).toFixed(1)},${y(p[series]).toFixed(1)}`).join(" ");
      chart.append(svg("polyline", { points: path, class: `series ${series}` }));
      points.forEach((p, i) => { // a dot on each busy minute, so a lone burst reads as one
        if (p[series]) chart.append(svg("circle", { cx: x(i), cy: y(p[series]), r: 3, class: `dot ${series}` }));
      });
    }
    const legend = el("div", { class: "legend" },
      el("span", { class: "key pulled" }, `pulled (${total("pulled")})`),
      el("span", { class: "key finished" }, `finished (${total("finished")})`));
    box.replaceChildren(chart, legend);
  }

  // The queued jobs by hardware class, as GET /_demand has them (core.demand): what to start
  // more of, and which classes no node seen can run at all (with the reason in figures).
  function renderDemand(d) {
    const summary = document.getElementById("demand-summary");
    const classes = d.classes.length === 1 ? "1 class" : `${d.classes.length} classes`;
    summary.textContent = `${d.queued} queued in ${classes}; ${d.no_node_can_run} that no node ` +
      `can run; ${d.nodes_seen} node(s) seen in the last ${age(d.seen_window_seconds)}` +
      (d.complete ? "" : "; more classes than shown, the rest not read");
    const tbody = document.getElementById("demand");
    if (!d.classes.length) return emptyRow(tbody, 6, "Nothing queued.");
    tbody.replaceChildren(...d.classes.map((c) => {
      const unrunnable = c.no_node_can_run > 0;
      const none = el("td", { testid: "demand-unrunnable" });
      if (unrunnable) {
        none.className = "bad";
        none.append(String(c.no_node_can_run), el("span", { class: "reason", testid: "demand-reason" }, c.reason));
      } else none.append(el("span", { class: "muted" }, "0"));
      return el("tr", { class: unrunnable ? "unrunnable" : null, testid: "demand-row" },
        el("td", { testid: "demand-class" }, `${c.environment} · ${hardware(c)}`),
        el("td", { class: "num", testid: "demand-queued" }, c.queued),
        el("td", {}, age(c.oldest_wait_seconds)),
        el("td", { class: "num", testid: "demand-fitting" }, c.fitting_nodes_seen),
        el("td", { testid: "demand-offer" }, c.smallest_fitting_offer ? hardware(c.smallest_fitting_offer) : "—"),
        none);
    }));
  }

  function renderWorkers(rows) {
    const tbody = document.getElementById("workers");
    if (!rows.length) return emptyRow(tbody, 6, "No worker seen recently.");
    tbody.replaceChildren(...rows.map((w) => {
      const jobs = el("td", {});
      w.active_jobs.forEach((id, i) => { if (i) jobs.append(", "); jobs.append(jobLink(id)); });
      if (!w.active_jobs.length) jobs.append(el("span", { class: "muted" }, "idle"));
      const aside = w.set_aside
        ? el("td", { class: "warn" }, `until ${clock(w.aside_until)}${w.aside_reason ? ` — ${w.aside_reason}` : ""}`)
        : el("td", { class: "muted" }, w.strikes ? `no (${w.strikes} strikes)` : "no");
      const node = el("td", { class: "name" }, `${w.account} · ${w.address || "address unknown"}` +
        (w.instance !== null ? ` · ${w.instance}` : ""), el("br"), el("span", { class: "muted" }, w.name));
      if (w.shared) node.append(el("br"), el("span", { class: "muted", title: w.shared }, "no instance id: identical fetchers share this node"));
      return el("tr", {}, node, el("td", {}, w.environment),
        el("td", {}, hardware(w)), jobs, el("td", {}, `${age(w.last_seen_seconds_ago)} ago`), aside);
    }));
  }

  function renderFailures(rows, now) {
    const tbody = document.getElementById("failures");
    if (!rows.length) return emptyRow(tbody, 5, "No failures or re-queues lately.");
    tbody.replaceChildren(...rows.map((f) => el("tr", {},
      el("td", {}, jobLink(f.job_id, `failure-link-${f.job_id}`)),
      el("td", {}, el("span", { class: `badge ${f.kind}` }, f.kind)),
      el("td", {}, f.worker || "—"),
      el("td", { class: "nowrap" }, when(f.at, now)),
      el("td", { class: "wide" }, details(f.runtime_details, `${f.job_id}@${f.at}`)))));
  }

  function renderUpstream(u) {
    const node = document.getElementById("upstream");
    const health = !u.configured ? "not configured" : u.healthy ? "healthy" : "unreachable";
    node.className = `value ${!u.configured ? "muted" : u.healthy ? "ok" : "bad"}`;
    const oldest = u.oldest_event_age_seconds === null ? "" : `, oldest ${age(u.oldest_event_age_seconds)}`;
    node.textContent = `${health} · outbox backlog ${u.outbox_backlog}${oldest}`;
  }

  async function loadOverview(current) {
    const data = await getJSON("/ui/api/overview");
    if (!current()) return; // the operator moved on while it was asked: a stale answer
    renderTiles(data.jobs_by_state);
    document.getElementById("oldest-queued").textContent =
      data.oldest_queued_age_seconds === null ? "nothing queued" : age(data.oldest_queued_age_seconds);
    renderChart(data.throughput);
    renderDemand(data.demand);
    renderWorkers(data.workers);
    renderFailures(data.recent_failures, data.now);
    renderUpstream(data.upstream);
  }

  // -- a job's page ----------------------------------------------------------------------

  function table(headers, rows, empty) {
    const body = rows.length
      ? rows.map((cells) => el("tr", {}, ...cells.map((c) => el("td", {}, c))))
      : [el("tr", { class: "empty" }, el("td", { colspan: headers.length }, empty))];
    return el("div", { class: "scroll" }, el("table", {},
      el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", {}, h)))), el("tbody", {}, ...body)));
  }

  async function loadJob(id, current) {
    const target = document.getElementById("job");
    let data;
    try {
      data = await getJSON(`/ui/api/jobs/${encodeURIComponent(id)}`);
    } catch (error) {
      if (error.status !== 404) throw error;
      if (!current()) return;
      target.replaceChildren(el("h1", {}, `Job #${id}`), el("p", { class: "error" }, error.message));
      return;
    }
    if (!current()) return; // another job's page, or the overview, was opened meanwhile
    const j = data.job;
    const facts = [["Upstream job", j.meta_job_id], ["Worker", j.worker || "—"],
      ["Attempt", `${j.attempt} (retries used: ${j.num_retries})`], ["Environment", j.environment || "any"],
      ["Group", j.group || "—"], ["Priority", j.priority], ["Hardware", hardware(j.hardware)],
      ["Created", stamp(j.created_at)], ["Updated", stamp(j.updated_at)],
      ["Last heartbeat", stamp(j.last_heartbeat_at)]];
    const parts = [
      el("h1", {}, `Job #${j.id} `, el("span", { class: `badge ${j.status}`, testid: "job-status" }, j.status)),
      el("dl", { class: "facts-list" }, ...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
    ];
    if (data.why) {
      // The reason holds the place in line; the estimate (when the service gives one: null
      // without a finish rate, absent from an older service) says when that place comes.
      parts.push(el("div", { class: "why" }, el("strong", {}, "Why it waits: "),
        el("span", { testid: "job-why" }, data.why.reason),
        data.why.estimate ? el("span", { class: "estimate" }, el("strong", {}, "When: "),
          el("span", { testid: "job-estimate" }, data.why.estimate)) : null));
    }
    parts.push(el("h2", {}, "Runtime details"),
      el("pre", { class: "details", testid: "job-details" }, j.runtime_details || "(none)"));
    parts.push(el("h2", {}, "Attempts"), table(["Attempt", "Worker", "Pulled", "Ended", "Outcome"],
      data.attempts.map((a) => [a.attempt, a.worker, stamp(a.pulled_at), stamp(a.ended_at),
        a.outcome ? el("span", { class: `badge ${a.outcome}` }, a.outcome) : "in progress"]),
      "Never pulled."));
    parts.push(el("h2", {}, "Events waiting for the upstream"),
      table(["Status", "Created", "Tries"],
        data.pending_events.map((e) => [e.status, stamp(e.created_at), e.tries]), "None pending."));
    target.replaceChildren(...parts);
    document.title = `Job #${j.id} · DECODE worker queue`;
  }

  // -- routing and the refresh loop ------------------------------------------------------

  function route() {
    const match = /^#\/jobs\/(\d+)$/.exec(window.location.hash);
    document.getElementById("overview-view").hidden = Boolean(match);
    document.getElementById("job-view").hidden = !match;
    if (!match) document.title = "Queue · DECODE worker queue";
    return match ? (current) => loadJob(match[1], current) : loadOverview;
  }

  let timer = null;
  let generation = 0; // a navigation starts a new loop; the one it interrupted stops
  async function refresh() {
    clearTimeout(timer);
    const mine = ++generation;
    // An answer that arrives after a newer refresh started is dropped, whatever it says: it
    // would paint the page (or its banner) with what the operator navigated away from.
    const current = () => mine === generation;
    try {
      await route()(current);
      if (!current()) return;
      showBanner("");
      refreshed();
    } catch (error) {
      if (current() && error.status !== 401) showBanner(`Refresh failed: ${error.message || error}. Retrying in 5 s.`);
    } finally {
      if (current()) timer = setTimeout(refresh, REFRESH_MS);
    }
  }

  function startDashboard() {
    window.addEventListener("hashchange", () => { window.scrollTo(0, 0); refresh(); });
    refresh();
  }

  // -- the sign-in page ------------------------------------------------------------------

  function startLogin(form) {
    const error = document.getElementById("login-error");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.hidden = true;
      const button = form.querySelector("button");
      button.disabled = true;
      try { // form-encoded in the body: the token never appears in a URL
        const response = await fetch(form.action, {
          method: "POST", credentials: "same-origin", body: new URLSearchParams(new FormData(form)),
          headers: { Accept: "application/json" },
        });
        if (response.ok) { window.location.assign("/ui"); return; }
        error.textContent = `${response.status === 403 ? "Refused" : "Not signed in"}: ${await detailOf(response)}`;
      } catch (failure) {
        error.textContent = `The service did not answer: ${failure.message}`;
      } finally {
        button.disabled = false;
      }
      error.hidden = false;
    });
  }

  const loginForm = document.getElementById("login-form");
  if (loginForm) startLogin(loginForm); else startDashboard();
})();
