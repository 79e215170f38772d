// Parts of a page that follow what they show: each element with an id and data-refresh="SECONDS"
// is fetched again from the page's own address and put in place, so a dashboard left open on a
// desk follows the devices without anyone pressing reload. A part someone is using (the focus is
// in it) is left alone until they are done; when the page cannot be fetched, what is shown stays.
"use strict";
(() => {
  const parts = () => Array.from(document.querySelectorAll("[data-refresh][id]"));
  if (!parts().length) return;
  const seconds = Math.max(2, Math.min(...parts().map((p) => Number(p.dataset.refresh) || 5)));
  async function refresh() {
    try {
      const response = await fetch(location.href, { credentials: "same-origin", cache: "no-store" });
      if (!response.ok || response.redirected) return;  // logged out meanwhile: the next click says so
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const part of parts()) {
        const next = fresh.getElementById(part.id);
        if (next && !part.contains(document.activeElement)) part.replaceWith(document.importNode(next, true));
      }
    } catch (e) {
      // the server away for a moment: keep what is shown
    }
  }
  setInterval(refresh, seconds * 1000);
})();
