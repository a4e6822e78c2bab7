// Takt operator page: live parts over server-sent events, labels through the HTTP API.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const body = document.body;
  const state = { parts: [], sel: null, pinnedUntil: 0 };

  function authHeader() {
    return sessionStorage.getItem("takt-auth") || "";
  }

  async function askCredentials(challenge) {
    const basic = /^basic/i.test(challenge || "");
    const v = window.prompt(basic ? "Operator login (user:password)" : "Operator token");
    if (!v) return false;
    sessionStorage.setItem("takt-auth", basic ? "Basic " + btoa(v) : "Bearer " + v);
    return true;
  }

  async function post(url, data, retry = true) {
    const h = { "Content-Type": "application/json" };
    if (authHeader()) h["Authorization"] = authHeader();
    const r = await fetch(url, { method: "POST", headers: h, body: JSON.stringify(data), credentials: "same-origin" });
    if (r.status === 401 && retry && (await askCredentials(r.headers.get("WWW-Authenticate")))) {
      return post(url, data, false);
    }
    const j = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(j.error || r.statusText);
    return j;
  }

  function fmtScore(v) {
    if (v.score === null || v.score === undefined) return "none";
    return v.score.toPrecision(4) + " / " + v.threshold.toPrecision(4);
  }

  // label sets (or, pressed again, clears) a verdict's label and shows the result.
  async function label(id, lbl) {
    $("msg").textContent = "";
    try {
      const v = await post(`/verdicts/${id}/label`, { label: lbl });
      $("msg").textContent = `part ${v.serial}: ${v.label ? "labelled " + v.label : "label cleared"}`;
      $("cur-label").textContent = v.label || "—";
      if (body.dataset.id) setButtons(v); else upsert(v);
    } catch (e) {
      $("msg").textContent = "label failed: " + e.message;
    }
  }

  function setButtons(v) {
    const fr = $("btn-fr"), fa = $("btn-fa");
    fr.disabled = !v || v.decision === "PASS";
    fa.disabled = !v || v.decision !== "PASS";
    fr.onclick = () => v && label(v.id, v.label === "false_reject" ? "" : "false_reject");
    fa.onclick = () => v && label(v.id, v.label === "false_accept" ? "" : "false_accept");
    fr.textContent = v && v.label === "false_reject" ? "Undo false reject" : "False reject";
    fa.textContent = v && v.label === "false_accept" ? "Undo false accept" : "False accept";
  }

  // Part detail page: the label buttons, and a detector's boxes over the image (they are
  // in frame pixels: the overlay takes the image's own size as its coordinates).
  if (body.dataset.id) {
    const l = $("cur-label").textContent.trim();
    setButtons({ id: Number(body.dataset.id), decision: body.dataset.decision, label: l === "—" ? "" : l });
    const img = $("part-img"), boxes = $("part-boxes");
    if (img && boxes) {
      const fit = () => boxes.setAttribute("viewBox", "0 0 " + img.naturalWidth + " " + img.naturalHeight);
      if (img.complete) fit(); else img.addEventListener("load", fit);
    }
    return;
  }

  function upsert(v) {
    const i = state.parts.findIndex((p) => p.id === v.id);
    if (i >= 0) state.parts[i] = v; else { state.parts.push(v); state.parts.sort((a, b) => a.id - b.id); }
    while (state.parts.length > 24) state.parts.shift();
    render();
  }

  function current() {
    if (state.sel !== null && Date.now() < state.pinnedUntil) {
      const p = state.parts.find((x) => x.id === state.sel);
      if (p) return p;
    }
    state.sel = null;
    return state.parts[state.parts.length - 1];
  }

  function render() {
    const v = current();
    if (v) {
      $("cur-empty").style.display = "none";
      const img = $("cur-img");
      const src = $("heat").checked && v.heatmap_url ? v.heatmap_url : v.image_url || "";
      if (img.getAttribute("src") !== src) img.setAttribute("src", src);
      img.style.display = src ? "" : "none";
      const vd = $("cur-verdict");
      vd.textContent = v.decision.replace("_", " ");
      vd.className = "verdict v-" + v.decision;
      $("cur-serial").textContent = v.serial || "—";
      $("cur-score").textContent = fmtScore(v);
      const frac = v.score == null ? 0 : Math.min(v.score / v.threshold / 2, 1);
      const bar = $("cur-bar");
      bar.style.width = (frac * 100).toFixed(1) + "%";
      bar.style.background = v.score != null && v.score > v.threshold ? "#c53030" : "#3fa45b";
      $("cur-latency").textContent = v.latency.total_ms.toFixed(1) + " ms (infer " + v.latency.infer_ms.toFixed(1) + ")";
      $("cur-reason").textContent = v.reason || "—";
      $("cur-label").textContent = v.label || "—";
      $("cur-detail").href = "/parts/" + v.id;
    }
    setButtons(v);
    // The strip keeps its buttons (and their loaded images) across updates.
    const strip = $("strip");
    const shown = state.parts.slice().reverse().slice(0, 12);
    const old = new Map([...strip.children].map((b) => [Number(b.dataset.id), b]));
    strip.replaceChildren(...shown.map((p) => {
      let b = old.get(p.id);
      if (!b) {
        b = document.createElement("button");
        b.dataset.id = p.id;
        b.append(document.createElement("img"), document.createElement("div"));
        b.onclick = () => { state.sel = p.id; state.pinnedUntil = Date.now() + 30000; render(); };
      }
      b.className = "thumb " + p.decision + (v && p.id === v.id ? " sel" : "");
      const im = b.firstChild;
      if (p.image_url && im.getAttribute("src") !== p.image_url) im.src = p.image_url;
      im.alt = p.serial;
      b.lastChild.textContent = (p.label ? "✎ " : "") + p.serial;
      return b;
    }));
  }

  function chip(id, text, cls) {
    const c = $(id);
    c.textContent = text;
    c.className = "chip " + (cls || "");
  }

  function renderStatus(s) {
    chip("health", s.ready ? "ready" : "not ready", s.ready ? "ok" : "bad");
    chip("model", `${s.model.name} ${s.model.version} · ${s.model.provider}`, s.model.provider === "cpu" ? "" : "ok");
    chip("camera", "camera " + s.camera.state, s.camera.state === "connected" ? "ok" : "bad");
    chip("plc", "PLC " + s.plc, s.plc === "off" ? "off" : /connected|listening/.test(s.plc) ? "ok" : "warn");
    if (s.sync === "not configured") chip("sync", "sync not configured", "off");
    else chip("sync", `sync ${s.sync} · backlog ${s.backlog ? s.backlog.count : "?"}`, s.backlog && s.backlog.count > 1000 ? "warn" : "ok");
    chip("mqtt", "MQTT " + s.mqtt, s.mqtt === "not configured" ? "off" : s.mqtt === "connected" ? "ok" : "warn");
    const tb = $("yield").tBodies[0];
    tb.replaceChildren(...s.yield.map((y, i) => {
      const tr = document.createElement("tr");
      if (i === 0) tr.className = "shift";
      for (const t of [y.name, y.parts, y.pass, y.fail, y.no_decision, y.parts ? (y.yield * 100).toFixed(1) + "%" : "—"]) {
        const td = document.createElement("td"); td.textContent = t; tr.append(td);
      }
      return tr;
    }));
    const total = document.createElement("tr");
    const t = s.totals;
    for (const x of ["all time", t.total, t.pass, t.fail, t.no_decision, t.total ? ((t.pass / t.total) * 100).toFixed(1) + "%" : "—"]) {
      const td = document.createElement("td"); td.textContent = x; total.append(td);
    }
    tb.append(total);
    renderRates(s.model);
    $("alerts-to").textContent = s.alerts_to;
    $("alerts").replaceChildren(...(s.alerts.length ? s.alerts : [{ time: null, message: "no alerts" }]).map((a) => {
      const li = document.createElement("li");
      if (a.time) { const tm = document.createElement("time"); tm.textContent = new Date(a.time).toLocaleTimeString(); li.append(tm); }
      li.append(document.createTextNode(a.message));
      return li;
    }));
  }

  const pct = (x) => (x == null ? "—" : (x * 100).toFixed(x > 0 && x < 0.1 ? 2 : 1) + "%");

  // The serving model's operating point beside what the station saw since it started serving.
  function renderRates(m) {
    const op = m.operating_point, seen = m.seen;
    let rule = "threshold not recorded";
    if (op) {
      rule = op.rule ? `rule ${op.rule}` : "threshold set by hand";
      if (op.false_reject_budget) rule += ` · budget ${pct(op.false_reject_budget)}`;
    }
    $("op-rule").textContent = rule;
    const since = seen.since ? " since " + new Date(seen.since).toLocaleTimeString() : "";
    const rows = [
      ["FAIL share", op && op.expected_false_reject, `${pct(seen.parts ? seen.fail_share : null)} of ${seen.parts} parts${since}`],
      ["false rejects (labelled)", op && op.expected_false_reject, `${seen.labelled_false_rejects} · ${pct(seen.parts ? seen.labelled_false_reject_share : null)}`],
      ["escapes (labelled)", op && op.expected_escape, `${seen.labelled_false_accepts} · ${pct(seen.labelled_false_accepts ? seen.labelled_escape_share : null)}`],
    ];
    $("rates").tBodies[0].replaceChildren(...rows.map(([name, expected, got]) => {
      const tr = document.createElement("tr");
      for (const t of [name, pct(expected), got]) {
        const td = document.createElement("td"); td.textContent = t; tr.append(td);
      }
      return tr;
    }));
  }

  async function loadList() {
    const r = await fetch("/verdicts?limit=24");
    if (r.ok) for (const v of await r.json()) upsert(v);
  }

  function connect() {
    const es = new EventSource("/events");
    es.addEventListener("open", () => { chip("live", "live", "ok"); loadList(); });
    es.addEventListener("error", () => chip("live", "reconnecting…", "warn"));
    es.addEventListener("status", (e) => renderStatus(JSON.parse(e.data)));
    es.addEventListener("part", (e) => upsert(JSON.parse(e.data)));
    es.addEventListener("label", (e) => upsert(JSON.parse(e.data)));
  }

  $("heat").addEventListener("change", render);
  render();
  connect();
})();
