// The daemon's bearer token for the API, shared by the panel and the viewer page. It comes from the address
// (#token= or ?token=), is kept for this tab only and is taken out of the address bar, so it does not stay in
// the history or travel in a Referer. The server never writes a token into a page.
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
