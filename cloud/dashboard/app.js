// dancewire live dashboard: no build step, no dependencies. Reads the REST snapshot, then the
// WebSocket stream; draws on requestAnimationFrame and tells the cloud when each window was drawn.
"use strict";
(() => {
  const PALETTE = ["#5ac8fa", "#ff9f0a", "#bf5af2", "#34c759", "#ff375f", "#ffd60a", "#64d2ff", "#ac8e68",
                   "#30d158", "#ff6482", "#0a84ff", "#e5e5ea"];
  const HISTORY_S = 60, TIMELINE_S = 20, RESTART_S = 10;
  const $ = (id) => document.getElementById(id);
  const state = {
    token: null, styles: [], colors: {}, dancers: new Map(), windows: 0, ws: null, dropped: false, dancerTimeout: 10,
    beats: new Map(),        // rig (session + node) -> [[t, count], ...] sorted, on that rig's media clock
    beatRuns: new Map(),     // rig -> {epoch, seq, start}: the newest grid's and the seq its clock last restarted at
    bpm: new Map(),          // rig -> tempo
    spans: [],               // recent windows for the timeline: {session, node, dancer, t0, t1, ba}
    latest: null,            // latest window message (for the media clock)
    pending: [], drawQueued: false, latency: [], lastRig: null,
    offset: 0,               // cloud clock - this browser's clock, s (arrival times are the cloud's)
    started: false, retry: 0,
  };
  const rig = (session, node) => `${session}\u0001${node}`;
  const serverNow = () => Date.now() / 1000 + state.offset;

  // ---------- token ----------
  function getToken() {
    const m = location.hash.match(/token=([^&]+)/);
    if (m) {   // taken once: a stale link's token must not beat the one typed into the form later
      localStorage.setItem("dancewire-token", decodeURIComponent(m[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
    return localStorage.getItem("dancewire-token");
  }
  function askToken() {
    const f = $("login"); f.hidden = false;
    f.onsubmit = (e) => { e.preventDefault(); localStorage.setItem("dancewire-token", $("token-input").value);
                          f.hidden = true; start(); };
  }
  async function api(path) {
    const r = await fetch(path, { headers: { Authorization: "Bearer " + state.token } });
    if (r.status === 401) { localStorage.removeItem("dancewire-token"); askToken(); throw new Error("unauthorised"); }
    if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);   // a 503 (store down) is no empty answer
    return r.json();
  }

  // ---------- helpers ----------
  function color(style) {
    if (!(style in state.colors)) state.colors[style] = PALETTE[Object.keys(state.colors).length % PALETTE.length];
    return state.colors[style];
  }
  function setStyles(styles) { state.styles = styles || []; state.styles.forEach(color); }
  function restyle(styles) {   // the cloud reloaded its gallery: bars and history lines for the new styles
    setStyles(styles);
    for (const d of state.dancers.values()) { d.bars.replaceChildren(); d.barEls = {}; d.dirty = true; }
  }
  const pct = (v) => (v == null ? "–" : (100 * v).toFixed(0) + "%");
  const fmt = (v, d = 1) => (v == null || isNaN(v) ? "–" : Number(v).toFixed(d));
  function el(tag, cls, text) { const e = document.createElement(tag); if (cls) e.className = cls; if (text != null) e.textContent = text; return e; }
  function fitCanvas(c) {
    const dpr = window.devicePixelRatio || 1, w = c.clientWidth || 300, h = c.clientHeight || c.height;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) { c.width = Math.round(w * dpr); c.height = Math.round(h * dpr); }
    const g = c.getContext("2d"); g.setTransform(dpr, 0, 0, dpr, 0, 0); return [g, w, h];
  }

  // ---------- dancers ----------
  function dancerEntry(key) {
    let d = state.dancers.get(key);
    if (d) return d;
    const empty = $("dancers").querySelector(".empty"); if (empty) empty.remove();
    const card = el("div", "card"); card.dataset.dancer = key;
    const top = el("div", "top");
    const label = el("span", "style-label", "…"); const conf = el("span", "conf", "");
    const left = el("div"); left.append(label, document.createTextNode(" "), conf);
    const who = el("span", "who", key);
    top.append(left, who);
    const bars = el("div", "bars"); const canvas = el("canvas"); const meta = el("div", "meta");
    card.append(top, bars, canvas, meta);
    $("dancers").append(card);
    d = { key, card, label, conf, bars, canvas, meta, history: [], summary: null, barEls: {}, last: null };
    state.dancers.set(key, d);
    return d;
  }
  function renderBars(d, probs) {
    const styles = state.styles.length ? state.styles : Object.keys(probs || {});
    for (const s of styles) {
      let b = d.barEls[s];
      if (!b) {
        const row = el("div", "bar"); const name = el("span", null, s); const track = el("div", "track");
        const fill = el("div", "fill"); fill.style.background = color(s); track.append(fill);
        const v = el("span", "v"); row.append(name, track, v); d.bars.append(row); row.dataset.style = s;
        b = d.barEls[s] = { fill, v };
      }
      const p = (probs || {})[s] || 0;
      b.fill.style.width = (100 * p).toFixed(1) + "%"; b.v.textContent = pct(p);
    }
  }
  function idle(d) {           // as the cloud says, or no window for its timeout since (summaries come with windows)
    const sum = d.summary || {}, newest = Math.max((d.last || {}).arrival || 0, sum.last_arrival || 0);
    return sum.active === false || (newest > 0 && serverNow() - newest > state.dancerTimeout);
  }
  function renderDancer(d) {
    const w = d.last, sum = d.summary || {};
    d.card.classList.toggle("idle", idle(d));
    if (!w) return;
    d.label.textContent = w.stable_style || (w.style ? w.style + "?" : "–");
    d.label.style.color = w.stable_style ? color(w.stable_style) : "var(--dim)";
    d.conf.textContent = w.stable_style ? pct(w.stable_confidence) : "settling…";
    renderBars(d, Object.keys(w.smoothed || {}).length ? w.smoothed : w.probs);
    const near = (w.nearest || [])[0], grp = (w.nearest_groups || [])[0], sc = w.scores || {};
    const lines = [];
    if (near) lines.push(["dances like", `${near.ref_id}${near.label ? " (" + near.label + ")" : ""} · cos ${fmt(near.score, 2)}`]);
    if (grp) lines.push(["group", `${grp.label} · cos ${fmt(grp.score, 2)}`]);
    if (sc.routine_similarity != null) lines.push(["routine", `${sum.routine || ""} 8-count #${fmt(sc.routine_phrase, 0)}: ${fmt(sc.routine_similarity, 0)}/100`]);
    if (sc.gaussian_mu != null) lines.push(["score", `${fmt(sc.gaussian_mu, 2)} ± ${fmt(sc.gaussian_sigma, 2)}`]);
    if (sc.beat_alignment != null) lines.push(["on the beat", pct(sc.beat_alignment)]);
    lines.push(["windows", `${sum.windows ?? "–"}${sum.late ? " (" + sum.late + " late)" : ""} · t=${fmt(w.t1, 1)} s`]);
    d.meta.replaceChildren(...lines.map(([k, v]) => { const r = el("div"); r.append(el("span", null, k + ": "), el("b", null, v)); return r; }));
    drawHistory(d);
  }
  function drawHistory(d) {
    const [g, W, H] = fitCanvas(d.canvas);
    g.clearRect(0, 0, W, H);
    g.strokeStyle = "#2a3140"; g.lineWidth = 1;
    for (const y of [0, 0.5, 1]) { g.beginPath(); g.moveTo(0, H - y * (H - 4) - 2); g.lineTo(W, H - y * (H - 4) - 2); g.stroke(); }
    const now = serverNow(), hist = d.history.filter((h) => now - h.at <= HISTORY_S);
    if (hist.length < 1) return;
    const x = (at) => W - ((now - at) / HISTORY_S) * W, y = (p) => H - p * (H - 4) - 2;
    for (const s of state.styles) {
      g.strokeStyle = color(s); g.lineWidth = 1.8; g.beginPath();
      hist.forEach((h, i) => { const p = (h.probs || {})[s] || 0; i ? g.lineTo(x(h.at), y(p)) : g.moveTo(x(h.at), y(p)); });
      g.stroke();
    }
  }

  // ---------- beats / timeline / eight-count ----------
  function addBeats(key, beats, epoch, seq, runSeq) {
    // the rules of the cloud's BeatGrid.take: a newer grid (higher seq, or another spool epoch)
    // well before the beats held means the rig's clock started again (an edge restarted); an older
    // one from before that restart (a late snapshot) is on the old clock and is left out (false)
    if (!beats.length) return true;
    let arr = state.beats.get(key) || [];
    const run = state.beatRuns.get(key) || { epoch: null, seq: -1, start: 0 };
    const otherEpoch = run.epoch !== null && epoch !== run.epoch, newer = otherEpoch || seq > run.seq;
    if (arr.length && !newer && seq < run.start) return false;
    if (arr.length && newer && beats[beats.length - 1][0] < arr[arr.length - 1][0] - RESTART_S) {
      arr = []; run.start = runSeq ?? seq;
    } else if (otherEpoch) run.start = 0;
    run.seq = otherEpoch ? seq : Math.max(run.seq, seq); run.epoch = epoch;
    state.beatRuns.set(key, run);
    const merged = [...arr, ...beats].sort((a, b) => a[0] - b[0]);
    arr = merged.filter((b, i) => i === 0 || b[0] > merged[i - 1][0] + 1e-3);
    if (arr.length > 2000) arr.splice(0, arr.length - 2000);
    state.beats.set(key, arr);
    return true;
  }
  function mediaNow() {
    const w = state.latest; if (!w) return null;
    return w.t1 + (serverNow() - w.arrival);
  }
  function drawTimeline() {
    const c = $("beat-canvas"); const [g, W, H] = fitCanvas(c); g.clearRect(0, 0, W, H);
    const key = state.lastRig; const tn = mediaNow(); if (tn == null) return;
    const t1 = tn, t0 = t1 - TIMELINE_S, x = (t) => ((t - t0) / TIMELINE_S) * W;
    const beats = state.beats.get(key) || [];
    for (const [t, count] of beats) {
      if (t < t0 || t > t1) continue;
      g.strokeStyle = count === 1 ? "#ffd60a" : "#4a5568"; g.lineWidth = count === 1 ? 2 : 1;
      g.beginPath(); g.moveTo(x(t), count === 1 ? 0 : 10); g.lineTo(x(t), H); g.stroke();
      if (count === 1) { g.fillStyle = "#ffd60a"; g.font = "10px sans-serif"; g.fillText("1", x(t) + 2, 10); }
    }
    const dancers = [...new Set(state.spans.filter((s) => rig(s.session, s.node) === key).map((s) => s.dancer))].sort();
    const rowH = Math.max(8, Math.min(22, (H - 20) / Math.max(dancers.length, 1)));
    state.spans.forEach((s) => {
      if (rig(s.session, s.node) !== key || s.t1 < t0) return;
      const row = dancers.indexOf(s.dancer), y = 16 + row * rowH;
      g.fillStyle = s.ba == null ? "rgba(85,102,102,.5)" : `hsla(${Math.round(120 * s.ba)}, 75%, 48%, .85)`;
      const a = Math.max(s.t0, s.t1 - 0.5);   // each window's newest hop, so windows tile instead of overlapping
      g.fillRect(x(a), y, Math.max(1, x(s.t1) - x(a) - 1), rowH - 3);
    });
    g.fillStyle = "#8b93a5"; g.font = "11px sans-serif";
    dancers.forEach((k, i) => g.fillText("#" + k.split("/").pop(), 2, 16 + i * rowH + rowH - 6));
    g.fillText(`${t0.toFixed(0)} s`, 2, H - 2); g.fillText(`${t1.toFixed(0)} s`, W - 36, H - 2);
  }
  function currentCount() {
    const tn = mediaNow(), beats = state.beats.get(state.lastRig) || [], bpm = state.bpm.get(state.lastRig) || 0;
    if (tn == null || !beats.length) return 0;
    let i = beats.length - 1; while (i > 0 && beats[i][0] > tn) i--;
    const [tb, cb] = beats[i]; if (tb > tn) return 0;
    const period = bpm > 0 ? 60 / bpm : (i > 0 ? beats[i][0] - beats[i - 1][0] : 0.5);
    const k = Math.floor((tn - tb) / Math.max(period, 0.1));
    return ((cb - 1 + k) % 8 + 8) % 8 + 1;
  }
  function drawEight() {
    const box = $("eight");
    if (!box.children.length) for (let i = 1; i <= 8; i++) { const c = el("div", i === 1 ? "one" : "", String(i)); box.append(c); }
    const n = currentCount(), bpm = state.bpm.get(state.lastRig) || 0;
    [...box.children].forEach((c, i) => c.classList.toggle("on", i + 1 === n));
    $("eight-info").textContent = n ? `count ${n}${bpm ? " · " + bpm.toFixed(0) + " BPM" : ""}` : "no beats yet";
    $("eight").dataset.count = String(n);
    const rows = [];
    for (const d of state.dancers.values()) {
      const ec = (d.summary && d.summary.eightcounts) || []; if (!ec.length) continue;
      const row = el("div", "row"); row.append(el("span", null, "#" + d.key.split("/").pop() + " vs routine"));
      const cells = el("div", "ecells");
      ec.slice(-16).forEach((e) => { const s = el("span"); s.title = `${e.phrase != null ? "8-count " + e.phrase : "before the first downbeat, " + e.t0 + " s"}: ${e.score.toFixed(0)}/100`;
        s.style.background = `hsl(${Math.round(1.2 * e.score)}, 70%, 45%)`; cells.append(s); });
      row.append(cells); rows.push(row);
    }
    $("eight-scores").replaceChildren(...rows);
  }

  // ---------- nodes, sessions, latency ----------
  function renderNodes(nodes, sessions) {
    $("nodes").replaceChildren(...(nodes || []).map((n) => {
      const li = el("li"); const a = el("span"); a.append(el("span", "dot" + (n.online ? " on" : "")), document.createTextNode(n.node_id));
      li.append(a, el("span", "hint", n.online ? "online" : "seen " + new Date(n.last_seen * 1000).toLocaleTimeString())); return li; }));
    $("sessions").replaceChildren(...(sessions || []).slice(0, 8).map((s) => {
      const li = el("li"); const live = s.live || {}; const grp = live.group || {};
      const head = el("div", "sess"); head.append(el("span", null, "▶ " + s.session_id),
        el("span", "hint", `${s.dancers} dancers · now ${grp.style || "–"}`));
      // whole-session distribution (every window, late ones too): one stacked bar
      const stack = el("div", "stack"); stack.title = "session so far";
      for (const [k, v] of Object.entries(live.overall || {}).sort((a, b) => b[1] - a[1])) {
        const seg = el("span"); seg.style.width = (100 * v).toFixed(1) + "%"; seg.style.background = color(k);
        seg.title = `${k} ${pct(v)}`; stack.append(seg);
      }
      const top = Object.entries(live.overall || {}).sort((a, b) => b[1] - a[1])[0];
      li.className = "session"; li.append(head, stack,
        el("span", "hint", top ? `session: ${top[0]} ${pct(top[1])} · ${live.windows} windows` : ""));
      return li; }));
  }
  function renderLatency(stages) {
    const rows = ["classify", "aggregate", "publish", "store", "total", "dashboard"].filter((k) => stages && stages[k]).map((k) => {
      const s = stages[k], tr = el("tr"); tr.dataset.stage = k;
      tr.append(el("td", null, k), el("td", null, fmt(s.p50_ms, 2)), el("td", null, fmt(s.p95_ms, 2)), el("td", null, String(s.count)));
      return tr; });
    $("latency").tBodies[0].replaceChildren(...rows);
  }
  function drawLatency() {
    const c = $("latency-canvas"); const [g, W, H] = fitCanvas(c); g.clearRect(0, 0, W, H);
    const L = state.latency.slice(-120); if (!L.length) return;
    const max = Math.max(50, ...L); g.strokeStyle = "#5ac8fa"; g.lineWidth = 1.5; g.beginPath();
    L.forEach((v, i) => { const x = (i / Math.max(L.length - 1, 1)) * W, y = H - (v / max) * (H - 4) - 2; i ? g.lineTo(x, y) : g.moveTo(x, y); });
    g.stroke(); g.fillStyle = "#8b93a5"; g.font = "10px sans-serif"; g.textAlign = "right"; g.fillText(max.toFixed(0) + " ms", W - 2, 10); g.textAlign = "left";
    const sorted = [...L].sort((a, b) => a - b), med = sorted[Math.floor(sorted.length / 2)];
    $("lat-dashboard").textContent = `median ${med.toFixed(1)} ms, last ${L[L.length - 1].toFixed(1)} ms`;
    $("hdr-latency").textContent = med.toFixed(0) + " ms";
  }
  async function poll() {
    try {
      const [nodes, sessions, lat] = await Promise.all([api("/api/nodes"), api("/api/sessions?limit=8"), api("/api/latency")]);
      renderNodes(nodes, sessions); renderLatency(lat.stages);
    } catch (e) { /* shown by the status pill */ }
    for (const d of state.dancers.values()) d.card.classList.toggle("idle", idle(d));
  }

  // ---------- live stream ----------
  function onMessage(m) {
    if (m.type === "hello") {   // after a reconnect the gallery may have changed meanwhile
      if (JSON.stringify(m.styles || []) !== JSON.stringify(state.styles)) restyle(m.styles); return;
    }
    if (m.type === "styles") { restyle(m.styles); return; }
    if (m.type === "beats") { if (addBeats(rig(m.session, m.node), m.beats, m.epoch, m.seq) && m.bpm) state.bpm.set(rig(m.session, m.node), m.bpm); return; }
    if (m.type === "dancer") { const d = dancerEntry(m.dancer); d.summary = m; d.dirty = true; return; }
    if (m.type === "group") return;
    if (m.type !== "window") return;
    state.windows++; state.pending.push(m.arrival);
    const d = dancerEntry(m.dancer);
    d.last = m; d.dirty = true;
    d.history.push({ at: m.arrival, probs: Object.keys(m.smoothed || {}).length ? m.smoothed : m.probs });
    if (d.history.length > 600) d.history.splice(0, d.history.length - 600);
    state.spans.push({ session: m.session, node: m.node, dancer: m.dancer, t0: m.t0, t1: m.t1, ba: (m.rhythm || {}).beat_alignment });
    if (state.spans.length > 4000) state.spans.splice(0, state.spans.length - 4000);
    if (!state.latest || m.arrival >= state.latest.arrival) { state.latest = m; state.lastRig = rig(m.session, m.node); }
    if (m.rhythm && m.rhythm.tempo_bpm) state.bpm.set(rig(m.session, m.node), m.rhythm.tempo_bpm);
  }
  function queueDraw() {
    if (state.drawQueued) return; state.drawQueued = true;
    const run = () => { if (!state.drawQueued) return; state.drawQueued = false; draw(); };
    requestAnimationFrame(run); setTimeout(run, 50);     // rAF can be throttled in background tabs
  }
  function draw() {
    for (const d of state.dancers.values()) if (d.dirty) { d.dirty = false; renderDancer(d); }
    $("windows-count").textContent = String(state.windows);
    drawTimeline(); drawEight();
    if (state.pending.length) {
      const shown = serverNow(), arrivals = state.pending.splice(0);
      for (const a of arrivals) state.latency.push(1000 * (shown - a));
      if (state.latency.length > 1000) state.latency.splice(0, state.latency.length - 1000);
      drawLatency();
      if (state.ws && state.ws.readyState === 1) state.ws.send(JSON.stringify({ type: "drawn", shown, arrivals }));
    }
  }
  function connect() {
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${proto}://${location.host}/api/live?token=${encodeURIComponent(state.token)}`);
    state.ws = ws;
    ws.onopen = () => {
      $("status").textContent = "live"; $("status").className = "pill on";
      if (state.dropped) { state.dropped = false; start(); }   // what was published meanwhile: from the snapshot
    };
    ws.onmessage = (ev) => { onMessage(JSON.parse(ev.data)); queueDraw(); };
    ws.onclose = (ev) => {
      $("status").textContent = ev.code === 4401 ? "bad token" : "offline"; $("status").className = "pill off";
      if (ev.code === 4401) { localStorage.removeItem("dancewire-token"); askToken(); return; }
      state.dropped = true;
      setTimeout(connect, 1000);
    };
  }
  async function start() {
    state.token = getToken();
    if (!state.token) { askToken(); return; }
    try {
      const sent = Date.now() / 1000;
      const snap = await api("/api/live/snapshot");
      // the cloud's clock against ours, NTP-style: no correction while its time lies within the
      // request's round trip (the clocks agree as far as we can tell), else from the midpoint
      const got = Date.now() / 1000;
      if (typeof snap.server_time === "number" && (snap.server_time < sent - 0.005 || snap.server_time > got + 0.005))
        state.offset = snap.server_time - (sent + got) / 2;
      if (typeof snap.dancer_timeout_s === "number") state.dancerTimeout = snap.dancer_timeout_s;
      if (JSON.stringify(snap.styles || []) !== JSON.stringify(state.styles)) restyle(snap.styles);
      for (const g of snap.beat_grids || []) { if (addBeats(rig(g.session, g.node), g.beats, g.epoch, g.seq, g.run_seq) && g.bpm) state.bpm.set(rig(g.session, g.node), g.bpm); }
      const recent = new Set((snap.results || []).map((r) => r.dancer));
      const seen = state.latest ? state.latest.arrival : -Infinity, counted = state.windows;
      for (const r of snap.results || []) {
        if (r.arrival <= seen) continue;                 // a resync after a drop: drawn already
        onMessage({ type: "window", node: r.node_id, session: r.session_id, dancer: r.dancer, t0: r.t0, t1: r.t1,
                    arrival: r.arrival, style: r.style, probs: r.probs, smoothed: null, stable_style: r.stable_style,
                    stable_confidence: r.stable_confidence, nearest: r.nearest, nearest_groups: r.nearest_groups,
                    scores: r.scores, rhythm: { beat_alignment: (r.scores || {}).beat_alignment } });
      }
      state.pending = []; state.windows = counted;
      for (const s of snap.dancers || []) {   // dancers of hours ago stay off the page until they dance again
        if (s.active === false && !recent.has(s.dancer)) continue;
        const d = dancerEntry(s.dancer); d.summary = s; d.dirty = true;
      }
      renderNodes(snap.nodes, []); renderLatency(snap.latency); draw();
    } catch (e) {
      if (e.message === "unauthorised") return;          // the token form is up
      $("status").textContent = "offline"; $("status").className = "pill off";
      state.retry = Math.min(10000, Math.max(500, 2 * state.retry));
      setTimeout(start, state.retry);                   // the cloud may be starting: try again
      return;
    }
    state.retry = 0;
    if (!state.ws || state.ws.readyState === WebSocket.CLOSED) connect();   // again after a new token
    if (state.started) return;
    state.started = true;
    poll(); setInterval(poll, 2000);
    setInterval(() => { drawEight(); drawTimeline(); }, 100);
  }
  window.addEventListener("resize", () => { for (const d of state.dancers.values()) drawHistory(d); drawTimeline(); drawLatency(); });
  window.dancewire = state;    // for tests and curious people
  start();
})();
