// avatar-bridge control panel: plain browser JavaScript, no build step.
// Every change goes through the daemon's JSON API (POST /api/control with the same control vocabulary as
// OSC and MIDI), so the panel is one more control surface feeding the one mixer.
"use strict";

const TOKEN = readToken();
const $ = (id) => document.getElementById(id);

async function api(path, body) {
  const opts = { headers: {} };
  if (TOKEN) opts.headers["Authorization"] = "Bearer " + TOKEN;
  if (body !== undefined) {
    opts.method = "POST";
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const res = await fetch(path, opts);
  let data = null;
  try { data = await res.json(); } catch (_) { data = null; }
  if (!res.ok) {
    const msg = data && data.error ? data.error + (data.fix ? " — " + data.fix : "") : res.status + " " + res.statusText;
    throw new Error(path + ": " + msg);
  }
  return data;
}

function showError(err) {
  $("error").textContent = err ? String(err.message || err) : "";
}

// ---------------------------------------------------------------- vocabulary
const ARKIT_REGIONS = [
  ["brows", /^brow/], ["eyes", /^eye/], ["cheeks & nose", /^(cheek|nose)/], ["jaw", /^jaw/],
  ["mouth", /^mouth/], ["tongue", /^tongue/],
];
const ARKIT_NAMES = [
  "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
  "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight",
  "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight",
  "eyeWideLeft", "eyeWideRight", "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "noseSneerLeft",
  "noseSneerRight", "jawForward", "jawLeft", "jawRight", "jawOpen", "mouthClose", "mouthFunnel", "mouthPucker",
  "mouthLeft", "mouthRight", "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight",
  "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight", "mouthRollLower",
  "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthPressLeft", "mouthPressRight",
  "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight", "tongueOut",
];
// FLAME channels by face region: [target, components, min, max, labels]. A multi-value target (flame/jaw)
// is sent whole: each slider is one component and a change sends all components of its target.
const FLAME_GROUPS = [
  ["jaw", [["flame/jaw", 3, -0.5, 0.5, ["open (x)", "side (y)", "twist (z)"]]]],
  ["eyes", [["gaze", 2, -1, 1, ["gaze x", "gaze y"]],
            ["flame/eyelids", 2, -0.3, 1, ["left lid", "right lid"]],
            ["flame/eyes", 6, -0.6, 0.6, ["left x", "left y", "left z", "right x", "right y", "right z"]]]],
  ["head & neck", [["head", 3, -1, 1, ["pitch", "yaw", "roll"]], ["flame/neck", 3, -0.8, 0.8, ["x", "y", "z"]]]],
  ["expression", [["flame/expression", 100, -3, 3, null]]],
];

function arkitRegion(name) {
  for (const [region, re] of ARKIT_REGIONS) if (re.test(name)) return region;
  return "other";
}

function flameControls(ranges) {
  const out = [];
  for (const [region, chans] of FLAME_GROUPS) {
    for (const [target, count, min0, max0, labels] of chans) {
      const r = ranges[target === "flame/expression" ? "flame/expression/<0-99>" : target];
      const [min, max] = r || [min0, max0];
      for (let i = 0; i < count; i++) {
        if (target === "flame/expression") {
          out.push({ target: `${target}/${i}`, label: `expression ${i}`, min, max, group: region });
        } else {
          out.push({ target, index: i, size: count, label: `${target.replace("flame/", "")} ${labels[i]}`,
                     min, max, group: region });
        }
      }
    }
  }
  return out;
}

// GET /api/controls answers with the control vocabulary: {targets: [{target, args, range, ...}], arkit: [52 names],
// flame: {group: [start, n]}, presets: [...], emotions: [...]}. Missing parts fall back to the built-in lists.
function normalizeControls(data) {
  data = data || {};
  const ranges = {};
  for (const t of data.targets || []) if (t && t.target && t.range) ranges[t.target] = t.range;
  const arkitRange = ranges["blend/<arkit>"] || [0, 1];
  const names = Array.isArray(data.arkit) && data.arkit.length ? data.arkit : ARKIT_NAMES;
  const arkit = names.map((n) => ({ target: "blend/" + n, label: n, min: arkitRange[0], max: arkitRange[1],
                                    group: arkitRegion(n) }));
  const list = (v) => (Array.isArray(v) ? v.map((p) => (typeof p === "string" ? p : p && p.name)).filter(Boolean) : []);
  return { arkit, flame: flameControls(ranges), presets: list(data.presets), emotions: list(data.emotions) };
}

function defaultVocabulary() { return normalizeControls(null); }

// ---------------------------------------------------------------- sliders
const sliders = new Map(); // target -> {input, output}
const pending = new Map(); // target -> value waiting to be sent
let sending = false;
let dragging = null;

async function flush() {
  if (sending) return;
  sending = true;
  try {
    while (pending.size) {
      const [target, value] = pending.entries().next().value;
      pending.delete(target);
      await api("/api/control", { target, values: value });
    }
    showError(null);
  } catch (err) { showError(err); }
  finally { sending = false; }
}

function sendControl(c, value) {
  if (c.size) {
    const values = [];
    for (let i = 0; i < c.size; i++) values.push(Number(sliders.get(c.target + "#" + i).input.value));
    pending.set(c.target, values);
  } else {
    pending.set(c.target, [value]);
  }
  flush();
}

function makeSlider(c, container) {
  const row = document.createElement("label");
  row.className = "ctl";
  const name = document.createElement("span");
  name.textContent = c.label;
  name.title = c.target;
  const input = document.createElement("input");
  input.type = "range";
  input.min = c.min; input.max = c.max;
  input.step = c.step || (c.max - c.min) / 200;
  input.value = c.default !== undefined ? c.default : Math.min(Math.max(0, c.min), c.max);
  input.dataset.target = c.target;
  if (c.size) input.dataset.index = c.index;
  const out = document.createElement("output");
  out.textContent = Number(input.value).toFixed(2);
  input.addEventListener("input", () => {
    out.textContent = Number(input.value).toFixed(2);
    sendControl(c, Number(input.value));
  });
  input.addEventListener("pointerdown", () => { dragging = c.target; });
  input.addEventListener("blur", () => { if (dragging === c.target) dragging = null; });
  input.addEventListener("pointerup", () => { dragging = null; });
  row.append(name, input, out);
  container.append(row);
  sliders.set(c.size ? c.target + "#" + c.index : c.target, { input, out });
}

function buildTab(el, controls) {
  el.textContent = "";
  const groups = new Map();
  for (const c of controls) {
    if (!groups.has(c.group)) groups.set(c.group, []);
    groups.get(c.group).push(c);
  }
  for (const [group, list] of groups) {
    const box = document.createElement("details");
    box.className = "group";
    box.open = group !== "expression" || list.length <= 20;
    const head = document.createElement("summary");
    head.textContent = `${group} (${list.length})`;
    box.append(head);
    list.forEach((c) => makeSlider(c, box));
    el.append(box);
  }
}

const fading = new Map(); // preset/emotion target → time (ms) its fade ends

function buildButtons(el, names, prefix) {
  el.textContent = "";
  for (const name of names) {
    const b = document.createElement("button");
    b.textContent = name;
    b.dataset.target = prefix + name;
    b.addEventListener("click", async () => {
      const on = !b.classList.contains("active");
      try {
        // value (1 = fully in, 0 = out), then the fade time in seconds
        const fade = Number($("fade").value);
        await api("/api/control", { target: prefix + name, values: [on ? 1 : 0, fade] });
        // While the fade runs the level is between 0 and 1: keep the button as clicked until it is done.
        fading.set(prefix + name, Date.now() + (fade + 1.5) * 1000);
        if (prefix === "emotion/") for (const other of el.querySelectorAll("button")) other.classList.remove("active");
        b.classList.toggle("active", on);
        showError(null);
      } catch (err) { showError(err); }
    });
    el.append(b);
  }
}

// Values of manual controls from GET /api/state: {target: number | [numbers]} in "manual".
function applyState(state) {
  const manual = state && (state.manual || state.controls);
  if (!manual || typeof manual !== "object") return;
  const entries = Array.isArray(manual) ? manual.map((m) => [m.target, m.value ?? m.values]) : Object.entries(manual);
  for (const [target, raw] of entries) {
    if (dragging === target || pending.has(target)) continue;
    const values = Array.isArray(raw) ? raw : [raw];
    values.forEach((value, i) => {
      const s = sliders.get(Array.isArray(raw) ? target + "#" + i : target);
      if (!s || typeof value !== "number" || document.activeElement === s.input) return;
      s.input.value = value;
      s.out.textContent = value.toFixed(2);
    });
    if ((target.startsWith("preset/") || target.startsWith("emotion/")) && !((fading.get(target) || 0) > Date.now())) {
      const b = document.querySelector(`button[data-target="${target}"]`);
      if (b) b.classList.toggle("active", values[0] > 0.5);
    }
  }
}

// ---------------------------------------------------------------- idle, audio, toggles
async function loadIdle() {
  const idle = await api("/api/idle");
  const box = $("idle");
  box.textContent = "";
  for (const kind of ["blink", "gaze", "sway"]) {
    const row = document.createElement("div");
    row.className = "ctl";
    const label = document.createElement("span");
    label.textContent = kind;
    const tick = document.createElement("input");
    tick.type = "checkbox"; tick.id = "idle-" + kind; tick.checked = !!idle[kind];
    const amount = document.createElement("input");
    amount.type = "range"; amount.min = 0; amount.max = kind === "blink" ? 1 : (kind === "gaze" ? 2 : 3); amount.step = 0.05;
    amount.value = idle[kind + "_amount"]; amount.id = "idle-" + kind + "-amount";
    const out = document.createElement("output");
    out.textContent = Number(amount.value).toFixed(2);
    tick.addEventListener("change", () => api("/api/idle", { [kind]: tick.checked }).then(() => showError(null), showError));
    amount.addEventListener("change", () => {
      out.textContent = Number(amount.value).toFixed(2);
      api("/api/idle", { [kind + "_amount"]: Number(amount.value) }).then(() => showError(null), showError);
    });
    row.append(label, tick, amount, out);
    box.append(row);
  }
}

function fillSelect(sel, options, current) {
  sel.textContent = "";
  for (const [value, text] of options) {
    const o = document.createElement("option");
    o.value = value; o.textContent = text;
    if (String(value) === String(current ?? "")) o.selected = true;
    sel.append(o);
  }
}

async function loadAudio() {
  const a = await api("/api/audio");
  fillSelect($("audio-source"), a.sources.map((s) => [s, s]), a.source);
  fillSelect($("audio-device"), [["", "system default"], ...a.inputs.map((d) => [d.name, d.name])], a.device);
  fillSelect($("audio-output"), [["", "none / default"], ...a.outputs.map((d) => [d.name, d.name])], a.output);
  $("audio-msg").textContent = a.problem || "";
}

function wireAudio() {
  const pick = (path, body) => api(path, body).then(() => { $("audio-msg").textContent = "switched"; }, showError);
  $("audio-source").addEventListener("change", () =>
    pick("/api/audio/source", { source: $("audio-source").value, device: $("audio-device").value || null }));
  $("audio-device").addEventListener("change", () =>
    pick("/api/audio/source", { source: $("audio-source").value, device: $("audio-device").value || null }));
  $("audio-output").addEventListener("change", () =>
    pick("/api/audio/output", { device: $("audio-output").value || null }));
}

function wireToggles() {
  $("tg-muted").addEventListener("change", () => api("/api/mute", { muted: $("tg-muted").checked }).then(() => showError(null), showError));
  $("tg-frozen").addEventListener("change", () => api("/api/freeze", { frozen: $("tg-frozen").checked }).then(() => showError(null), showError));
  $("btn-reset").addEventListener("click", () => api("/api/control", { target: "reset", values: [] }).then(() => showError(null), showError));
  $("fade").addEventListener("input", () => { $("fade-out").textContent = Number($("fade").value).toFixed(1) + " s"; });
  for (const b of document.querySelectorAll(".tabs button")) {
    b.addEventListener("click", () => {
      for (const o of document.querySelectorAll(".tabs button")) o.classList.toggle("active", o === b);
      for (const t of document.querySelectorAll(".tab")) t.classList.toggle("hidden", t.id !== "tab-" + b.dataset.tab);
    });
  }
}

// ---------------------------------------------------------------- status strip
const lastActivity = {};
function fmtMs(v) { return v === null || v === undefined ? "–" : v.toFixed(0) + " ms"; }
function fmtBytes(b) { return (b / 1048576).toFixed(0) + " MiB"; }

function showStatus(s) {
  window.panel.status = s;
  $("st-fps").textContent = s.fps.toFixed(1) + "/" + s.target_fps;
  $("st-dropped").textContent = String(s.dropped);
  $("st-g2g").textContent = fmtMs(s.latency_ms.glass_to_glass.mean);
  $("st-gpu").textContent = s.gpu ? fmtBytes(s.gpu.allocated_bytes) : "n/a";
  $("st-viewers").textContent = String(s.viewers);
  const parts = Object.entries(s.stages).map(([n, v]) => `${n} <b>${v.p50_ms.toFixed(1)}</b>`);
  $("st-stages").innerHTML = parts.join(" · ");
  for (const src of ["osc", "vmc", "midi"]) {
    const el = $("act-" + src);
    const n = s.control_activity[src] || 0;
    el.querySelector("b").textContent = String(n);
    el.classList.toggle("flash", lastActivity[src] !== undefined && n > lastActivity[src]);
    lastActivity[src] = n;
  }
  $("tg-muted").checked = s.muted;
  $("tg-frozen").checked = s.frozen;
  $("st-conn").textContent = s.running ? "running" : "stopped";
}

async function pollStatus() {
  try {
    showStatus(await api("/api/status"));
  } catch (err) {
    $("st-conn").textContent = "disconnected";
  }
  setTimeout(pollStatus, 500);
}

async function pollState() {
  try { applyState(await api("/api/state")); } catch (_) { /* shown by the status strip */ }
  setTimeout(pollState, 1000);
}

// ---------------------------------------------------------------- WebRTC preview
let pc = null;
let previewResource = null;  // the session's Location: the one handle that ends it on the daemon
function endPreview() {
  if (pc) { pc.close(); pc = null; }
  if (previewResource) {
    const headers = TOKEN ? { Authorization: "Bearer " + TOKEN } : {};
    fetch(previewResource, { method: "DELETE", headers, keepalive: true }).catch(() => {});
    previewResource = null;
  }
}
window.addEventListener("pagehide", endPreview);

async function startPreview() {
  endPreview();
  const msg = $("preview-msg");
  msg.textContent = "connecting preview…";
  try {
    pc = new RTCPeerConnection({ iceServers: [] });
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    const stream = new MediaStream();
    pc.ontrack = (ev) => { stream.addTrack(ev.track); $("preview").srcObject = stream; };
    pc.onconnectionstatechange = () => { msg.textContent = "preview " + pc.connectionState; };
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((resolve) => {
      if (pc.iceGatheringState === "complete") return resolve();
      const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, 2000);
    });
    const answer = await api("/api/webrtc/offer", { sdp: pc.localDescription.sdp, type: pc.localDescription.type });
    previewResource = answer.location;
    await pc.setRemoteDescription({ type: answer.type, sdp: answer.sdp });
  } catch (err) {
    msg.textContent = "no preview: " + err.message;
  }
}

// ---------------------------------------------------------------- start
window.panel = { status: null, ready: false, vocabulary: null };

async function main() {
  wireToggles();
  wireAudio();
  $("btn-preview").addEventListener("click", startPreview);
  let vocab;
  try { vocab = normalizeControls(await api("/api/controls")); } catch (err) { showError(err); vocab = defaultVocabulary(); }
  if (!vocab.presets.length) {
    try {
      const p = await api("/api/presets");
      const v = normalizeControls(Array.isArray(p) ? { presets: p } : p);
      vocab.presets = v.presets; vocab.emotions = vocab.emotions.length ? vocab.emotions : v.emotions;
    } catch (_) { /* no presets endpoint */ }
  }
  window.panel.vocabulary = vocab;
  buildTab($("tab-arkit"), vocab.arkit);
  buildTab($("tab-flame"), vocab.flame);
  buildButtons($("presets"), vocab.presets, "preset/");
  buildButtons($("emotions"), vocab.emotions, "emotion/");
  await Promise.all([loadIdle().catch(showError), loadAudio().catch(showError)]);
  pollStatus();
  pollState();
  window.panel.ready = true;
  startPreview();
}

main();
