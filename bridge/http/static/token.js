// The daemon's bearer token for the API, shared by the panel and the viewer page. It comes from the address
// (#token= or ?token=), is kept for this tab only and is taken out of the address bar, so it does not stay in
// the history or travel in a Referer. The server never writes a token into a page. Also the two request helpers
// the viewer and OBS pages share.
"use strict";

function readToken() {
  const query = new URLSearchParams(location.search);
  const hash = new URLSearchParams(location.hash.slice(1));
  const given = hash.get("token") || query.get("token");
  if (given) {
    sessionStorage.setItem("avatar-bridge-token", given);
    query.delete("token");
    hash.delete("token");
    const q = query.toString(), h = hash.toString();
    history.replaceState(null, "", location.pathname + (q ? "?" + q : "") + (h ? "#" + h : ""));
  }
  return sessionStorage.getItem("avatar-bridge-token") || "";
}

// Request headers: the media type when the request has a body, and the token when there is one.
function authHeaders(token, type) {
  const h = {};
  if (type) h["Content-Type"] = type;
  if (token) h.Authorization = "Bearer " + token;
  return h;
}

// Resolves once the peer connection has gathered its ICE candidates (at most 2 s: loopback needs no more).
async function iceGathered(pc) {
  if (pc.iceGatheringState === "complete") return;
  await new Promise((resolve) => {
    pc.addEventListener("icegatheringstatechange", () => { if (pc.iceGatheringState === "complete") resolve(); });
    setTimeout(resolve, 2000);
  });
}
