// The operator dashboard: the queue at a glance, any job found by filters, and the operators'
// actions (retry, fail with a reason, release), each confirmed first and written to the audit
// log; refreshed every 5 s with fetch. No framework and no build step. Every piece of server
// text reaches the page through textContent (never innerHTML), so job details and reasons
// cannot inject markup.
"use strict";

(function () {
  const REFRESH_MS = 5000;
  const STATES = ["queued", "pulled", "preprocessing", "running", "postprocessing",
    "finished", "error", "cancelled"];
  const ACTIVE = ["pulled", "preprocessing", "running", "postprocessing"];
  const SVG = "http://www.w3.org/2000/svg";
  const expanded = new Set(); // runtime_details the operator opened, kept across refreshes
  // The jobs view's filters, as the hash and GET /ui/api/jobs name them.
  const FILTERS = ["state", "environment", "worker", "node", "class", "min_age", "max_age", "job_id", "id"];

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

  // A hardware class as the jobs view's filter writes it (GET /ui/api/jobs?class=…); null when
  // a name holds ":", which the filter cannot say.
  function classFilter(c) {
    const names = [c.gpu_model || "", c.gpu_archi || ""];
    if (names.some((n) => n.includes(":"))) return null;
    return [c.environment, c.cpu_cores || 0, c.memory || 0, c.gpu_mem || 0, ...names].join(":");
  }

  function jobsHash(params) {
    const query = new URLSearchParams(params).toString();
    return query ? `#/jobs?${query}` : "#/jobs";
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

  // An action: JSON in, JSON out. The browser sends it with Origin and Sec-Fetch-Site of this
  // page, which the service requires of every request that changes something.
  async function postJSON(url, body) {
    const response = await fetch(url, {
      method: "POST", credentials: "same-origin", cache: "no-store",
      headers: { Accept: "application/json", "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (response.status === 401) {
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
      const key = classFilter(c);
      const name = `${c.environment} · ${hardware(c)}`;
      return el("tr", { class: unrunnable ? "unrunnable" : null, testid: "demand-row" },
        el("td", { testid: "demand-class" }, key === null ? name : el("a", {
          href: jobsHash({ state: "queued", class: key }), testid: "demand-class-link",
          title: "The queued jobs of this class",
        }, name)),
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
        ? el("td", { class: "warn", testid: "node-aside" }, `until ${clock(w.aside_until)}${w.aside_reason ? ` — ${w.aside_reason}` : ""}`,
          el("br"), releaseButton(w))
        : el("td", { class: "muted", testid: "node-aside" }, w.strikes ? `no (${w.strikes} strikes)` : "no");
      const node = el("td", { class: "name" }, `${w.account} · ${w.address || "address unknown"}` +
        (w.instance !== null ? ` · ${w.instance}` : ""), el("br"), el("span", { class: "muted" }, w.name));
      if (w.shared) node.append(el("br"), el("span", { class: "muted", title: w.shared }, "no instance id: identical fetchers share this node"));
      return el("tr", { testid: "node-row", "data-node": w.name }, node, el("td", {}, w.environment),
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
    const actions = el("div", { class: "actions" });
    if (j.status === "error") {
      actions.append(actionButton("Retry", "job-retry", () => askRetry([j.id])));
    }
    if (j.status === "queued" || ACTIVE.includes(j.status)) {
      actions.append(actionButton("Fail…", "job-fail", () => askFail([j.id]), "danger"));
    }
    const parts = [
      el("h1", {}, `Job #${j.id} `, el("span", { class: `badge ${j.status}`, testid: "job-status" }, j.status)),
      actions.childElementCount ? actions : null,
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
    target.replaceChildren(...parts.filter(Boolean));
    document.title = `Job #${j.id} · DECODE worker queue`;
  }


  // -- the jobs view ---------------------------------------------------------------------

  const selected = new Map(); // queue id -> status, of the jobs ticked on the page shown
  let filledFrom = null; // the hash the filter form was last filled from
  let nextJobs = null; // the cursor of the next page, from the last answer

  function jobsParams(query) {
    const given = new URLSearchParams(query || "");
    const kept = new URLSearchParams();
    for (const name of [...FILTERS, "before"]) {
      for (const value of given.getAll(name)) if (value !== "") kept.append(name, value);
    }
    return kept;
  }

  // The form shows the filters of the hash, once per hash: a refresh never overwrites what the
  // operator is typing.
  function fillFilters(params) {
    const form = document.getElementById("jobs-filter");
    const key = params.toString();
    if (filledFrom === key) return;
    filledFrom = key;
    selected.clear();
    for (const name of FILTERS) {
      const field = form.elements.namedItem(name);
      let value = params.getAll(name).join(",");
      if ((name === "min_age" || name === "max_age") && value !== "") value = String(Number(value) / 60);
      if (field.tagName === "SELECT" && value && ![...field.options].some((o) => o.value === value)) {
        field.append(el("option", { value }, value)); // e.g. state=queued,running from a link
      }
      field.value = value;
    }
  }

  function readFilters(form) {
    const params = new URLSearchParams();
    for (const name of FILTERS) {
      let value = String(form.elements.namedItem(name).value || "").trim();
      if (value === "") continue;
      if (name === "min_age" || name === "max_age") value = String(Math.round(Number(value) * 60));
      params.set(name, value);
    }
    return params;
  }

  function updateBulkButtons() {
    const ids = [...selected.entries()];
    const retryable = ids.filter(([, status]) => status === "error").map(([id]) => id);
    const failable = ids.filter(([, status]) => status === "queued" || ACTIVE.includes(status)).map(([id]) => id);
    const retry = document.getElementById("retry-selected");
    const fail = document.getElementById("fail-selected");
    retry.disabled = !retryable.length;
    retry.textContent = retryable.length ? `Retry selected (${retryable.length})` : "Retry selected";
    fail.disabled = !failable.length;
    fail.textContent = failable.length ? `Fail selected (${failable.length})…` : "Fail selected…";
    const boxes = [...document.querySelectorAll("#jobs input[type=checkbox]")];
    const all = document.getElementById("select-all");
    all.checked = boxes.length > 0 && boxes.every((b) => b.checked);
    all.indeterminate = !all.checked && boxes.some((b) => b.checked);
    return { retryable, failable };
  }

  function renderJobs(data, params) {
    const tbody = document.getElementById("jobs");
    const shown = new Map(data.jobs.map((j) => [j.id, j.status]));
    for (const id of [...selected.keys()]) { // a ticked job that left the page is not acted on
      if (shown.has(id)) selected.set(id, shown.get(id)); else selected.delete(id);
    }
    const filtered = [...params.keys()].some((k) => k !== "before");
    document.getElementById("jobs-summary").textContent = data.jobs.length
      ? `${data.jobs.length} job(s) on this page${data.next !== null ? ", more on the next" : ""}` +
        (filtered ? " (filtered)" : "")
      : "No job matches.";
    if (!data.jobs.length) emptyRow(tbody, 10, params.has("before") ? "No more jobs." : "No job matches these filters.");
    else tbody.replaceChildren(...data.jobs.map((j) => {
      const box = el("input", { type: "checkbox", "aria-label": `Select job ${j.id}`, testid: `select-${j.id}` });
      box.checked = selected.has(j.id);
      box.addEventListener("change", () => {
        if (box.checked) selected.set(j.id, j.status); else selected.delete(j.id);
        updateBulkButtons();
      });
      const where = el("td", {}, j.worker || el("span", { class: "muted" }, "—"));
      if (j.node) where.append(el("br"), el("span", { class: "muted" }, j.node));
      const key = j.class.split(":").length === 6 ? j.class : null;
      return el("tr", { testid: "job-row", "data-job": j.id },
        el("td", {}, box),
        el("td", {}, jobLink(j.id, `job-link-${j.id}`)),
        el("td", { class: "num" }, j.meta_job_id),
        el("td", {}, el("span", { class: `badge ${j.status}`, testid: "job-row-status" }, j.status)),
        el("td", {}, j.environment),
        el("td", {}, key === null ? hardware(j.hardware)
          : el("a", { href: jobsHash({ class: key }), title: `Jobs of class ${key}` }, hardware(j.hardware))),
        where,
        el("td", { class: "nowrap" }, stamp(j.created_at)),
        el("td", { class: "nowrap" }, age(j.age_seconds)),
        el("td", { class: "wide" }, details(j.runtime_details, `row ${j.id}@${j.updated_at}`)));
    }));
    nextJobs = data.next;
    document.getElementById("jobs-next").hidden = data.next === null;
    const first = new URLSearchParams(params);
    first.delete("before");
    const firstLink = document.getElementById("jobs-first");
    firstLink.setAttribute("href", jobsHash(first));
    firstLink.hidden = !params.has("before");
    updateBulkButtons();
  }

  async function loadJobs(query, current) {
    const params = jobsParams(query);
    fillFilters(params);
    document.title = "Jobs · DECODE worker queue";
    let data;
    try {
      data = await getJSON(`/ui/api/jobs?${params}`);
    } catch (error) {
      if (error.status !== 422) throw error;
      if (!current()) return;
      // A filter the service refuses: said where the table would be, in the service's words.
      emptyRow(document.getElementById("jobs"), 10, error.message);
      document.getElementById("jobs-summary").textContent = "Filters not accepted.";
      return;
    }
    if (!current()) return; // other filters, or another view, were chosen meanwhile
    renderJobs(data, params);
  }

  function startJobsView() {
    const form = document.getElementById("jobs-filter");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const hash = jobsHash(readFilters(form));
      if (window.location.hash === hash) refresh(); else window.location.hash = hash;
    });
    document.getElementById("jobs-next").addEventListener("click", () => {
      if (nextJobs === null) return;
      const params = jobsParams(/^#\/jobs\?(.*)$/.exec(window.location.hash)?.[1]);
      params.set("before", String(nextJobs));
      window.location.hash = jobsHash(params);
    });
    document.getElementById("select-all").addEventListener("change", (event) => {
      for (const box of document.querySelectorAll("#jobs input[type=checkbox]")) {
        if (box.checked !== event.target.checked) box.click();
      }
    });
    document.getElementById("retry-selected").addEventListener("click", () => askRetry(updateBulkButtons().retryable));
    document.getElementById("fail-selected").addEventListener("click", () => askFail(updateBulkButtons().failable));
  }

  // -- the audit log ---------------------------------------------------------------------

  let nextAudit = null;

  async function loadAudit(query, current) {
    const params = new URLSearchParams(query || "");
    const before = params.get("before");
    const data = await getJSON(`/ui/api/audit${before ? `?before=${encodeURIComponent(before)}` : ""}`);
    if (!current()) return;
    document.title = "Audit log · DECODE worker queue";
    const tbody = document.getElementById("audit");
    if (!data.entries.length) emptyRow(tbody, 6, before ? "No older entries." : "No action taken yet.");
    else tbody.replaceChildren(...data.entries.map((e) => {
      const jobs = el("td", {});
      e.jobs.forEach((id, i) => { if (i) jobs.append(", "); jobs.append(jobLink(id)); });
      if (!e.jobs.length) jobs.append(el("span", { class: "muted" }, "—"));
      return el("tr", { testid: "audit-row" },
        el("td", { class: "nowrap" }, stamp(e.at)),
        el("td", { testid: "audit-actor" }, e.actor),
        el("td", {}, el("span", { class: `badge action-${e.action}`, testid: "audit-action" }, e.action)),
        el("td", { testid: "audit-target" }, e.target),
        jobs,
        el("td", { class: "wide", testid: "audit-detail" }, details(e.detail, `audit ${e.id}`)));
    }));
    nextAudit = data.next;
    document.getElementById("audit-next").hidden = data.next === null;
    document.getElementById("audit-first").hidden = !before;
  }

  // -- actions: confirmed first, their result shown, then the page refreshed -------------

  let pending = null; // what the confirm step will do: { run, reason }

  function actionButton(label, testid, onClick, kind) {
    const button = el("button", { type: "button", class: kind || null, testid }, label);
    button.addEventListener("click", onClick);
    return button;
  }

  function releaseButton(w) {
    return actionButton("Release", `release-${w.name}`, () => ask({
      title: "Release this node?",
      message: `End the cool-off of node ${w.name} (${w.account}${w.address ? ` at ${w.address}` : ""}) now: ` +
        "it gets jobs again at its next pull.",
      ok: "Release",
      run: () => postJSON("/ui/api/actions/release", { name: w.name }),
    }), "small");
  }

  function idsText(ids) {
    const shown = ids.slice(0, 20).map((id) => `#${id}`).join(", ");
    return ids.length > 20 ? `${shown} and ${ids.length - 20} more` : shown;
  }

  function askRetry(ids) {
    if (!ids.length) return;
    ask({
      title: ids.length === 1 ? "Retry this job?" : `Retry ${ids.length} jobs?`,
      message: `Put ${idsText(ids)} back in the queue: each starts over, and its user sees it queued again.`,
      ok: ids.length === 1 ? "Retry" : `Retry ${ids.length} jobs`,
      run: () => postJSON("/ui/api/actions/retry", { job_ids: ids }),
    });
  }

  function askFail(ids) {
    if (!ids.length) return;
    ask({
      title: ids.length === 1 ? "Fail this job?" : `Fail ${ids.length} jobs?`,
      message: `End ${idsText(ids)} in error now. A worker running one is told to stop at its next call; ` +
        "the reason is forwarded to the job's user.",
      ok: ids.length === 1 ? "Fail the job" : `Fail ${ids.length} jobs`,
      danger: true,
      reason: true,
      run: (reason) => postJSON("/ui/api/actions/fail", { job_ids: ids, reason }),
    });
  }

  function ask({ title, message, ok, run, reason, danger }) {
    pending = { run, reason: Boolean(reason) };
    document.getElementById("confirm-title").textContent = title;
    document.getElementById("confirm-message").textContent = message;
    const box = document.getElementById("confirm-reason-box");
    const text = document.getElementById("confirm-reason");
    box.hidden = !reason;
    text.value = "";
    document.getElementById("confirm-error").hidden = true;
    const button = document.getElementById("confirm-ok");
    button.textContent = ok;
    button.className = danger ? "danger" : "primary";
    button.disabled = false;
    document.getElementById("confirm").hidden = false;
    (reason ? text : button).focus();
  }

  function closeConfirm() {
    pending = null;
    document.getElementById("confirm").hidden = true;
  }

  function showResult(result) {
    const notice = document.getElementById("notice");
    const text = document.getElementById("notice-text");
    const lines = [...result.jobs.map((j) => `job #${j.job_id}: ${j.result}`),
      ...result.nodes.map((n) => `node ${n.node}: ${n.result}`)];
    text.replaceChildren(el("strong", { testid: "action-summary" }, `${result.summary}.`),
      lines.length ? el("ul", {}, ...lines.map((line) => el("li", {}, line))) : null);
    notice.hidden = false;
  }

  function startActions() {
    const form = document.getElementById("confirm-form");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (!pending) return;
      const reason = document.getElementById("confirm-reason").value.trim();
      const error = document.getElementById("confirm-error");
      if (pending.reason && !reason) {
        error.textContent = "Say why: the reason is shown to the job's user.";
        error.hidden = false;
        return;
      }
      const { run } = pending;
      document.getElementById("confirm-ok").disabled = true;
      try {
        showResult(await run(reason));
        closeConfirm();
      } catch (failure) {
        if (failure.status === 401) return;
        // Refused (a bad reason, or no longer allowed): said in the dialog, which stays open.
        error.textContent = failure.message || String(failure);
        error.hidden = false;
        document.getElementById("confirm-ok").disabled = false;
        return;
      }
      selected.clear();
      refresh();
    });
    document.getElementById("confirm-cancel").addEventListener("click", closeConfirm);
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && !document.getElementById("confirm").hidden) closeConfirm();
    });
    document.getElementById("notice-close").addEventListener("click", () => {
      document.getElementById("notice").hidden = true;
    });
  }

  // -- routing and the refresh loop ------------------------------------------------------

  const VIEWS = ["overview-view", "job-view", "jobs-view", "audit-view"];

  function route() {
    const hash = window.location.hash;
    const job = /^#\/jobs\/(\d+)$/.exec(hash);
    const jobs = /^#\/jobs(?:\?(.*))?$/.exec(hash);
    const audit = /^#\/audit(?:\?(.*))?$/.exec(hash);
    const view = job ? "job-view" : jobs ? "jobs-view" : audit ? "audit-view" : "overview-view";
    for (const id of VIEWS) document.getElementById(id).hidden = id !== view;
    for (const link of document.querySelectorAll(".nav a")) {
      const target = link.getAttribute("href");
      const here = target === "#/" ? view === "overview-view" : hash === target || hash.startsWith(`${target}?`);
      if (here) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
    }
    if (job) return (current) => loadJob(job[1], current);
    if (jobs) return (current) => loadJobs(jobs[1], current);
    if (audit) return (current) => loadAudit(audit[1], current);
    document.title = "Queue · DECODE worker queue";
    return loadOverview;
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
    startJobsView();
    startActions();
    document.getElementById("audit-next").addEventListener("click", () => {
      if (nextAudit !== null) window.location.hash = `#/audit?before=${nextAudit}`;
    });
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
