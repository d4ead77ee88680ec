// FileShare dashboard: renders the snapshots the master pushes on
// /ui/events (server-sent events). No framework, no build step.
"use strict";

const WINDOW_MS = 60000;
const history = []; // [{t, states: {id: state}}], the last WINDOW_MS
const $ = (id) => document.getElementById(id);

function text(id, v) { const e = $(id); if (e.textContent !== String(v)) e.textContent = v; }

function el(tag, cls, txt) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (txt !== undefined) e.textContent = txt;
  return e;
}

function ago(ms) {
  if (ms < 0) return "—";
  if (ms < 1000) return ms + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
  return Math.round(ms / 60000) + " min";
}

function rate(v) { return v >= 100 ? Math.round(v).toString() : v.toFixed(1); }

function renderMembers(s) {
  const tbody = $("members");
  tbody.replaceChildren();
  const maxCommit = Math.max(1, ...s.members.map((m) => m.commit_index));
  for (const m of s.members) {
    const tr = el("tr");
    tr.dataset.member = m.id;
    const name = el("td");
    name.append(el("b", "", m.id));
    if (m.id === s.leader_id) name.append(el("span", "crown", "★"));
    if (m.id === s.self) name.append(el("span", "self", "(this page)"));
    if (m.suffrage !== "Voter") name.append(el("span", "self", m.suffrage.toLowerCase()));
    tr.append(name);
    const st = el("td");
    const badge = el("span", "badge s-" + m.state, m.state.toLowerCase());
    if (!m.reachable && m.error) badge.title = m.error;
    st.append(badge);
    tr.append(st);
    const num = (v, ok) => el("td", "", ok ? v.toLocaleString() : "—");
    tr.append(num(m.term, m.reachable), num(m.last_index, m.reachable));
    const commit = num(m.commit_index, m.reachable);
    if (m.reachable) {
      const bar = el("span", "bar");
      bar.style.width = Math.max(2, Math.round(60 * m.commit_index / maxCommit)) + "px";
      commit.append(bar);
    }
    tr.append(commit, num(m.applied_index, m.reachable));
    const lag = el("td", m.lag > 64 ? "warn" : "", m.lag < 0 ? "—" : m.lag.toLocaleString());
    tr.append(lag);
    const lc = el("td", m.last_contact_ms > 2 * s.config.election_ms ? "warn" : "",
      m.id === s.leader_id && m.reachable ? "leader" : ago(m.last_contact_ms));
    tr.append(lc);
    const dg = el("td", "d-" + m.digest_match,
      { leader: "reference", same: "= leader", behind: "catching up", diverged: "DIVERGED", unknown: "—" }[m.digest_match]);
    if (m.digest) dg.title = m.digest;
    tr.append(dg, el("td", "muted", m.version || "—"));
    tbody.append(tr);
  }
}

const STATE_COLOR = { Leader: "var(--leader)", Follower: "var(--follower)", Candidate: "var(--candidate)" };

let firstSeen = 0;
function renderTimeline(s) {
  const tl = $("timeline");
  const ids = s.members.map((m) => m.id);
  const laneH = 16, top = 6;
  tl.style.height = (top + ids.length * laneH + 22) + "px";
  // The window grows with the time this page has watched, up to a minute.
  if (!firstSeen) firstSeen = s.now;
  const win = Math.min(WINDOW_MS, Math.max(15000, Math.ceil((s.now - firstSeen) / 5000) * 5000));
  text("window", Math.round(win / 1000));
  const now = s.now, from = now - win;
  const x = (t) => ((t - from) / win * 100) + "%";
  const track = el("div", "track");
  const parts = [track];
  ids.forEach((id, i) => {
    const label = el("span", "lane-label", id);
    label.style.top = (top + i * laneH) + "px";
    parts.push(label);
    const lane = el("div", "lane");
    lane.style.top = (top + i * laneH) + "px";
    // Segments of equal state, from the snapshot history.
    let start = null, state = null;
    const flush = (end) => {
      if (state === null || end < from) return;
      const seg = el("div", "seg");
      seg.style.left = x(Math.max(start, from));
      seg.style.width = (Math.max(0, end - Math.max(start, from)) / win * 100) + "%";
      seg.style.background = STATE_COLOR[state] || "var(--down)";
      seg.title = id + ": " + state;
      lane.append(seg);
    };
    for (const h of history) {
      const st = h.states[id] || "unreachable";
      if (st !== state) { flush(h.t); start = h.t; state = st; }
    }
    flush(now);
    track.append(lane);
  });
  for (const e of s.events) {
    if (e.t < from) continue;
    const mk = el("div", "mark k-" + e.kind);
    mk.style.left = x(e.t);
    mk.style.height = (ids.length * laneH) + "px";
    mk.title = new Date(e.t).toLocaleTimeString() + " " + e.text;
    track.append(mk);
  }
  const step = win > 30000 ? 10 : 5;
  for (let sec = Math.floor(win / 1000 / step) * step; sec >= 0; sec -= step) {
    const t = el("span", "tick", sec === 0 ? "now" : "−" + sec + " s");
    t.style.left = x(now - sec * 1000);
    track.append(t);
  }
  tl.replaceChildren(...parts);
}

let lastGeneration = -1;
function renderEvents(s) {
  if (s.generation === lastGeneration) return;
  lastGeneration = s.generation;
  const ol = $("events");
  ol.replaceChildren();
  for (const e of s.events.slice(-30).reverse()) {
    const li = el("li");
    li.dataset.kind = e.kind;
    li.append(el("time", "", new Date(e.t).toLocaleTimeString()), el("i", "k-" + e.kind), document.createTextNode(e.text + "  "));
    li.append(el("span", "muted", "term " + e.term));
    ol.append(li);
  }
}

function render(s) {
  history.push({ t: s.now, states: Object.fromEntries(s.members.map((m) => [m.id, m.state])) });
  while (history.length && history[0].t < s.now - WINDOW_MS - 1000) history.shift();
  text("leader", s.leader_id || "none");
  $("leader").className = s.leader_id ? "" : "warn";
  text("term", s.term);
  text("self", s.self);
  const cl = $("canlose");
  text("canlose", s.can_lose < 0 ? "at risk" : s.can_lose === 1 ? "1 master" : s.can_lose + " masters");
  cl.className = "value " + (s.can_lose < 0 ? "bad" : s.can_lose > 0 ? "good" : "");
  text("tolerance", s.tolerance + " · " + s.voters + " voters, quorum " + s.quorum);
  text("files", s.index.files.toLocaleString());
  text("holdings", s.index.holdings.toLocaleString());
  text("peers", s.index.peers.toLocaleString());
  text("rate-entries", rate(s.rates.entries));
  text("rate-writes", rate(s.rates.writes));
  text("rate-reads", rate(s.rates.reads));
  text("rate-heartbeats", rate(s.rates.heartbeats));
  text("rate-announces", rate(s.rates.announces));
  text("swarms", s.swarms.swarms.toLocaleString());
  text("swarm-peers", s.swarms.peers.toLocaleString());
  text("timing", "heartbeat timeout " + s.config.heartbeat_ms + " ms, election timeout " + s.config.election_ms + " ms");
  renderMembers(s);
  renderTimeline(s);
  renderEvents(s);
}

function connect() {
  const conn = $("conn");
  const es = new EventSource("events");
  es.onopen = () => { conn.dataset.state = "live"; conn.textContent = "live"; };
  es.onmessage = (m) => {
    try { render(JSON.parse(m.data)); } catch (err) { console.error(err); }
  };
  es.onerror = () => { conn.dataset.state = "lost"; conn.textContent = "connection lost; reconnecting…"; };
}

connect();
