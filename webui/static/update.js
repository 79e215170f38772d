// The software-update page while an update waits or runs: ask the API until it has finished,
// through the web UI's own restart (the update restarts it: fetch fails meanwhile), then show
// the outcome. A <meta refresh> would land on the browser's error page and stay there.
(function () {
  "use strict";
  if (!document.getElementById("update-in-progress")) return;
  async function poll() {
    try {
      const answer = await fetch("/api/v1/update", {credentials: "same-origin", cache: "no-store"});
      if (answer.status === 401) { location.reload(); return; }  // logged out: the log-in page
      if (answer.ok) {
        const body = await answer.json();
        if (!body.updates.some(u => u.state === "waiting" || u.state === "running")) {
          location.reload();
          return;
        }
      }
    } catch (e) {
      // the web UI is restarting with the update: try again
    }
    setTimeout(poll, 4000);
  }
  setTimeout(poll, 4000);
})();

// The upload form: a file over the limit is not sent at all. The server would refuse it
// unread and close the connection, and the browser would show its own error page.
(function () {
  "use strict";
  const form = document.getElementById("update-form");
  if (!form) return;
  const file = form.querySelector('input[type="file"]');
  const message = document.getElementById("update-too-big");
  function fits() {
    const big = file.files.length > 0 && file.files[0].size > Number(form.dataset.maxBytes);
    message.hidden = !big;
    return !big;
  }
  file.addEventListener("change", fits);
  form.addEventListener("submit", function (event) {
    if (!fits()) event.preventDefault();
  });
})();
