// The avatar for OBS's browser source: plays WHEP with packed alpha (/whep?alpha=1), unpacks it in WebGL
// (alpha.js) and draws it on a transparent page, so OBS composites the head over the scene. Reconnects by
// itself when the daemon restarts or the network blips.
//
// Options (query string): token=<http.token> (or #token=), audio=0 (video only), status=0 (never show the
// status line).
"use strict";

const params = new URLSearchParams(location.search);
const token = readToken();
const withAudio = params.get("audio") !== "0";
const showStatus = params.get("status") !== "0";
const STALL_MS = 5000; // pictures came, then none this long: connect again
const CONNECT_MS = 15000; // an attempt without a first picture this long: start again
const CLEAR_MS = 10000; // no picture this long: clear to transparent rather than freeze the last one
const RETRY_MS = [1000, 2000, 3000, 5000];

const $ = (id) => document.getElementById(id);
const video = $("video");
const canvas = $("canvas");
const obs = { state: "new", frames: 0, reconnects: 0, played: false, lastFrameAt: 0, attemptAt: 0, progressAt: 0,
  error: null, pc: null, resource: null, size: null };
window.obs = obs;

function say(text) {
  obs.state = text;
  $("state").textContent = showStatus && !obs.played ? "Avatar Bridge: " + text : "";
}

// --- drawing (alpha.js unpacks) -------------------------------------------------------------------------

let unpacker = null;
try {
  unpacker = window.PackedAlpha.attach(video, canvas, (size) => {
    obs.size = size;
    obs.frames += 1;
    obs.lastFrameAt = performance.now();
    if (!obs.played) {
      obs.played = true;
      say("playing");
    }
  });
} catch (err) {
  obs.error = "WebGL: " + err.message;
}

function clear() {
  if (unpacker) unpacker.clear();
}

// --- WHEP, with reconnection ----------------------------------------------------------------------------

const headers = (type) => authHeaders(token, type);

function hangUp() {
  const pc = obs.pc;
  const resource = obs.resource;
  obs.pc = null;
  obs.resource = null;
  if (pc) pc.close();
  if (resource) fetch(resource, { method: "DELETE", headers: headers(), keepalive: true }).catch(() => {});
}

let retryTimer = null;
let attempt = 0;

function reconnect(why) {
  if (retryTimer) return;
  hangUp();
  const delay = RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)];
  attempt += 1;
  say(why + "; connecting again in " + delay / 1000 + " s");
  retryTimer = setTimeout(() => {
    retryTimer = null;
    obs.reconnects += 1;
    connect().catch((err) => reconnect(err.message));
  }, delay);
}

async function connect() {
  hangUp();
  say("connecting");
  obs.attemptAt = performance.now();
  const pc = new RTCPeerConnection({ iceServers: [] });
  obs.pc = pc;
  pc.addTransceiver("video", { direction: "recvonly" });
  if (withAudio) pc.addTransceiver("audio", { direction: "recvonly" });
  const stream = new MediaStream();
  pc.ontrack = (ev) => {
    stream.addTrack(ev.track);
    video.srcObject = stream;
    video.muted = !withAudio;
    video.play().catch(() => { video.muted = true; video.play().catch(() => {}); });
  };
  pc.onconnectionstatechange = () => {
    if (obs.pc !== pc) return;
    if (pc.connectionState === "connected") { attempt = 0; say("connected"); }
    if (pc.connectionState === "failed" || pc.connectionState === "closed") reconnect("connection " + pc.connectionState);
  };
  await pc.setLocalDescription(await pc.createOffer());
  await iceGathered(pc);
  const res = await fetch("whep?alpha=1", { method: "POST", headers: headers("application/sdp"),
    body: pc.localDescription.sdp });
  if (res.status !== 201) {
    let why = res.status + " " + res.statusText;
    try { const j = await res.json(); why = j.error + " — " + j.fix; } catch (_) { /* not JSON */ }
    obs.error = why;
    throw new Error(why);
  }
  const resource = res.headers.get("Location");
  const answer = await res.text();
  if (obs.pc !== pc) { // given up on meanwhile: end the session it got
    if (resource) fetch(resource, { method: "DELETE", headers: headers() }).catch(() => {});
    return;
  }
  obs.error = null;
  obs.resource = resource;
  await pc.setRemoteDescription({ type: "answer", sdp: answer });
}

// A daemon that restarted or a path that died shows up as a picture that stopped, long before ICE declares the
// connection failed (that takes half a minute); an attempt with no picture after CONNECT_MS is given up on
// too. Progress is the video's decoding clock, not drawing: a hidden browser source draws nothing, and must
// not take that for a dead stream.
let lastTime = -1;
setInterval(() => {
  const now = performance.now();
  if (video.currentTime !== lastTime) {
    lastTime = video.currentTime;
    if (obs.pc && video.srcObject && video.readyState >= 2) obs.progressAt = now;
  }
  if (obs.lastFrameAt && now - obs.lastFrameAt > CLEAR_MS && now - obs.progressAt > CLEAR_MS) clear();
  const pc = obs.pc;
  if (!pc || retryTimer) return;
  if (obs.progressAt > obs.attemptAt) {
    const quiet = now - obs.progressAt;
    if (quiet > STALL_MS) reconnect("no picture for " + Math.round(quiet / 1000) + " s");
  } else if (now - obs.attemptAt > CONNECT_MS) {
    reconnect(pc.connectionState === "connected" ? "no picture" : "could not connect");
  }
}, 1000);

window.addEventListener("pagehide", hangUp);

if (!unpacker) {
  say(obs.error);
} else {
  connect().catch((err) => reconnect(err.message));
}
