// The built-in viewer: plays the avatar over WHEP, and "talk" sends this browser's microphone upstream
// (a second, send-only connection) after switching the daemon's audio source to "webrtc". With ?alpha=1 it
// asks for packed alpha and shows the unpacked picture over a checkerboard (alpha.js).
"use strict";

const params = new URLSearchParams(location.search);
const token = readToken();
const alpha = params.get("alpha") === "1";
const $ = (id) => document.getElementById(id);
const viewer = { pc: null, resource: null, talk: null, talkResource: null, previousSource: null, state: "new",
  alpha, alphaFrames: 0 };
window.viewer = viewer;

const headers = (type) => authHeaders(token, type);

function say(text) { viewer.state = text; $("state").textContent = text; }

async function watch() {
  if (viewer.pc) viewer.pc.close();
  const pc = new RTCPeerConnection({ iceServers: [] });
  viewer.pc = pc;
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  const stream = new MediaStream();
  pc.ontrack = (ev) => { stream.addTrack(ev.track); $("video").srcObject = stream; };
  pc.onconnectionstatechange = () => {
    say(pc.connectionState);
    if (pc.connectionState === "failed") setTimeout(watch, 2000);
  };
  await pc.setLocalDescription(await pc.createOffer());
  await iceGathered(pc);
  const res = await fetch(alpha ? "whep?alpha=1" : "whep", { method: "POST", headers: headers("application/sdp"),
    body: pc.localDescription.sdp });
  if (res.status !== 201) {
    let why = res.statusText;
    try { const j = await res.json(); why = j.error + " — " + j.fix; } catch (_) { /* not JSON */ }
    say("cannot watch: " + why);
    return;
  }
  viewer.resource = res.headers.get("Location");
  await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
}

async function api(path, body) {
  const res = await fetch(path, { method: body === undefined ? "GET" : "POST", headers: headers("application/json"),
    body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await res.json();
  if (!res.ok) throw new Error(data.error + " — " + data.fix);
  return data;
}

async function startTalk() {
  const mic = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true } });
  const info = await api("api/audio");
  viewer.previousSource = info.source;
  if (info.source !== "webrtc") await api("api/audio/source", { source: "webrtc" });
  const pc = new RTCPeerConnection({ iceServers: [] });
  viewer.talk = pc;
  for (const track of mic.getTracks()) pc.addTransceiver(track, { direction: "sendonly", streams: [mic] });
  await pc.setLocalDescription(await pc.createOffer());
  await iceGathered(pc);
  const answer = await api("api/webrtc/offer", { sdp: pc.localDescription.sdp, type: "offer" });
  viewer.talkResource = answer.location;
  await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
  $("btn-talk").classList.add("on");
  $("btn-talk").textContent = "stop talking";
}

async function stopTalk() {
  const pc = viewer.talk;
  viewer.talk = null;
  if (pc) {
    pc.getSenders().forEach((s) => s.track && s.track.stop());
    pc.close();
  }
  if (viewer.talkResource) {
    await fetch(viewer.talkResource, { method: "DELETE", headers: headers("application/json") });
    viewer.talkResource = null;
  }
  if (viewer.previousSource && viewer.previousSource !== "webrtc") {
    await api("api/audio/source", { source: viewer.previousSource }).catch(() => {});
  }
  $("btn-talk").classList.remove("on");
  $("btn-talk").textContent = "talk";
}

$("btn-talk").addEventListener("click", () => {
  (viewer.talk ? stopTalk() : startTalk()).catch((err) => say("talk failed: " + err.message));
});
$("btn-play").addEventListener("click", () => { $("video").muted = false; $("video").play(); });
window.addEventListener("pagehide", () => {
  if (viewer.resource) fetch(viewer.resource, { method: "DELETE", headers: headers("application/json"), keepalive: true });
});
$("video").muted = true;  // autoplay is allowed muted; "play with sound" unmutes
if (alpha) {
  $("video").classList.add("feed");
  $("canvas").hidden = false;
  window.PackedAlpha.attach($("video"), $("canvas"), () => { viewer.alphaFrames += 1; });
}
watch().catch((err) => say("cannot watch: " + err.message));
