// The operator console: polls the recorder's status; start, stop and mark through the API;
// on simulated hardware, drives the virtual counter's button and fault panel.
"use strict";
(function () {
  const messages = JSON.parse(document.getElementById("messages").textContent);
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const $ = (id) => document.getElementById(id);
  const msg = (key) => messages[key] || key;

  function describe(rec) {
    if (!rec) return msg("rec.none");
    // counted the way each language counts (1 mark, 2 marks; マーク1件)
    const count = (n, key) => msg(n === 1 ? key + ".one" : key + ".many").replace("%s", n);
    let text = `${rec.id} — ${rec.duration_s.toFixed(1)} ${msg("rec.seconds")}, ${count(rec.segments, "rec.n_segments")}`;
    if (rec.marks) text += `, ${count(rec.marks, "rec.n_marks")}`;
    return text;
  }

  function render(s) {
    $("unreachable").hidden = true;
    const sign = $("sign");
    sign.dataset.lit = String(s.sign.lit);
    $("sign-state").textContent = s.sign.lit ? msg("sign.lit")
      : (s.sign.commanded ? msg("sign.not_lit") : msg("sign.off"));
    const light = $("light");
    light.dataset.pattern = s.status_light.pattern;
    $("light-state").textContent = msg("light." + s.status_light.pattern);
    $("state").textContent = msg("state." + s.state);
    $("state").dataset.state = s.state;
    $("recording").textContent = describe(s.recording);
    $("last-recording").textContent = describe(s.last_recording);
    // Each fault in the page's language (which device, whether recording can go on); the
    // recorder's own words (English) apart, labelled, for whoever fixes it — not inside the sentence.
    const detail = $("fault-detail");
    $("faults").textContent = s.faults.length ? s.faults.map((f) =>
      `${msg("fault.device." + f.device)}${msg(f.blocking ? "fault.blocking" : "fault.continuing")}`)
      .join(" / ") : msg("faults.none");
    detail.textContent = s.faults.length ? `${msg("fault.detail")}: ${s.faults.map((f) => f.message).join(" / ")}` : "";
    $("faults").appendChild(document.createElement("br"));
    $("faults").appendChild(detail);
    const warnings = (s.capacity_warnings || []).map((w) => msg("warning.capacity")
      .replace("%s", () => w.projected_days).replace("%s", () => msg("class." + w.record_class))
      .replace("%s", () => w.min_days))
      .concat((s.warnings || []).filter((w) => !w.startsWith("capacity:")));
    $("warnings").textContent = warnings.length ? warnings.join(" / ") : msg("faults.none");
    $("clock").textContent = `${s.clock.now} (${s.clock.synchronised ? msg("clock.synced") : msg("clock.unsynced")})`;
    const button = $("record-button");
    if (button) button.setAttribute("aria-pressed", String(s.button.pressed));
  }

  async function poll() {
    try {
      const response = await fetch("/api/v1/status", { cache: "no-store" });
      if (response.status === 401) { window.location = "/login?next=/console"; return; }
      if (!response.ok) throw new Error(String(response.status));
      render(await response.json());
    } catch (e) {
      $("unreachable").hidden = false;
    }
  }

  // Requests go out one after another: a release must never overtake its press, or the
  // pin would stay low and the recorder would see a long press.
  let queue = Promise.resolve();
  function simulate(action) {
    queue = queue.then(async () => {
      const response = await fetch("/api/v1/simulator/" + action, {
        method: "POST",
        headers: { "X-CSRFToken": csrf },
      });
      if (response.ok) render(await response.json());
    }).catch(() => { $("unreachable").hidden = false; });
    return queue;
  }

  const button = $("record-button");
  if (button) {
    // Press on pointer down, release on pointer up: holding the button holds the pin low.
    let down = false;
    const press = (e) => { e.preventDefault(); if (!down) { down = true; simulate("press"); } };
    const release = () => { if (down) { down = false; simulate("release"); } };
    button.addEventListener("pointerdown", press);
    button.addEventListener("pointerup", release);
    button.addEventListener("pointerleave", release);
    button.addEventListener("pointercancel", release);
    button.addEventListener("keydown", (e) => { if ((e.key === " " || e.key === "Enter") && !e.repeat) press(e); });
    button.addEventListener("keyup", (e) => { if (e.key === " " || e.key === "Enter") release(); });
    // A key or pointer held while the window loses focus would hold the pin low for good.
    window.addEventListener("blur", release);
    document.addEventListener("visibilitychange", () => { if (document.hidden) release(); });
  }
  document.querySelectorAll(".sim-action").forEach((b) =>
    b.addEventListener("click", () => simulate(b.dataset.action)));

  async function recorder(action, body) {
    const response = await fetch("/api/v1/recorder/" + action, {
      method: "POST",
      headers: { "X-CSRFToken": csrf, "Content-Type": "application/json" },
      body: JSON.stringify(body || {}),
    });
    let answer = {};
    try { answer = await response.json(); } catch (e) { /* an HTML error page */ }
    if (response.ok) render(answer); else window.alert(answer.error || ("HTTP " + response.status));
    return response.ok ? answer : null;
  }
  document.querySelectorAll("button.control").forEach((b) =>
    b.addEventListener("click", () => recorder(b.dataset.action)));
  const markForm = $("mark-form");
  if (markForm) {
    markForm.addEventListener("submit", (e) => {
      e.preventDefault();
      const section = markForm.section.value;
      recorder("mark", { section: section, note: markForm.note.value }).then((answer) => {
        if (!answer) return;
        // Say which recording the mark went to: when idle, it is the last one.
        const done = $("mark-done");
        done.textContent = msg(answer.marked ? "mark.done" : "mark.done_next")
          .replace("%s", () => answer.marked || "").replace("%t", () => section || "—");
        done.hidden = false;
      });
      markForm.note.value = "";
    });
  }

  poll();
  setInterval(poll, 1000);
})();
