// The viewing player: the approved parts, decrypted in the server's memory, appended to a
// Media Source one after another; seeking fetches the part that holds the time asked for.
"use strict";
(function () {
  const video = document.getElementById("player");
  const timeline = document.getElementById("timeline");
  const fmt = (s) => `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, "0")}`;
  let manifest = null;
  let source = null;
  let buffer = null;
  const loaded = new Set();  // asked for
  const placed = new Set();  // appended (or empty)
  let loading = null;

  function wallAt(part, t) {
    // The wall-clock time at t: the part's start (ISO, with the device's UTC offset) plus the
    // time played into it, written in the device's offset whatever the browser's is.
    const m = /([+-])(\d\d):(\d\d)$/.exec(part.wall);
    const offset = m ? (m[1] === "-" ? -1 : 1) * (Number(m[2]) * 60 + Number(m[3])) * 60000 : 0;
    const d = new Date(Date.parse(part.wall) + Math.max(0, t - part.start) * 1000 + offset);
    const p2 = (n) => String(n).padStart(2, "0");
    return `${d.getUTCFullYear()}-${p2(d.getUTCMonth() + 1)}-${p2(d.getUTCDate())} ` +
      `${p2(d.getUTCHours())}:${p2(d.getUTCMinutes())}:${p2(d.getUTCSeconds())}`;
  }

  function fail(e) {
    document.getElementById("player-error").hidden = false;
    console.error(e);
  }

  function partAt(t) {
    const parts = manifest.parts;
    for (let i = parts.length - 1; i >= 0; i--) if (t >= parts[i].start) return parts[i];
    return parts[0];
  }

  function appended() {
    return new Promise((resolve) => buffer.addEventListener("updateend", resolve, { once: true }));
  }

  async function load(part) {
    if (loaded.has(part.n)) return;
    loaded.add(part.n);
    try {
      const response = await fetch(video.dataset.parts + part.n + ".mp4", { cache: "no-store" });
      if (response.status === 204) {  // nothing inside the approved range to show
        placed.add(part.n);
        finish();
        return;
      }
      if (!response.ok) throw new Error("part " + part.n + ": " + response.status);
      // A part cut at the range's edge starts at its first keyframe: the server says where.
      const start = Number(response.headers.get("X-Kiroku-Start") || part.start);
      const data = await response.arrayBuffer();
      if (buffer.updating) await appended();
      buffer.timestampOffset = start;
      buffer.appendBuffer(data);
      await appended();
      placed.add(part.n);
      finish();
    } catch (e) {
      loaded.delete(part.n);  // try again when it is needed next
      throw e;
    }
  }

  function finish() {
    // Once the last part is in, the stream is ended: playback then runs to the end of the
    // picture, not only to where the sound ends (cut in whole frames, a little earlier), and
    // the player stops as ended. Appending an earlier part after a seek opens it again.
    if (placed.has(manifest.parts.length - 1) && source.readyState === "open" && !buffer.updating) {
      source.endOfStream();
    }
  }

  function jumpGap() {
    // Parts cut at a keyframe can leave a fraction of a second unfilled: play on past it.
    const ranges = video.buffered;
    for (let i = 0; i < ranges.length; i++) {
      if (ranges.start(i) > video.currentTime && ranges.start(i) - video.currentTime < 2) {
        video.currentTime = ranges.start(i) + 0.01;
        return;
      }
    }
  }

  async function ensure(t) {
    // The part under t and the one after it, so playback runs on across the boundary.
    const part = partAt(t);
    const next = manifest.parts[part.n + 1];
    loading = (loading || Promise.resolve()).then(() => load(part)).then(() => next && load(next)).catch(fail);
    return loading;
  }

  fetch(video.dataset.manifest, { cache: "no-store" }).then((r) => r.json()).then((m) => {
    manifest = m;
    timeline.max = m.duration;
    document.getElementById("total").textContent = fmt(m.duration);
    source = new MediaSource();
    video.src = URL.createObjectURL(source);
    source.addEventListener("sourceopen", async () => {
      buffer = source.addSourceBuffer(`video/mp4; codecs="${m.codecs}"`);
      buffer.mode = "segments";
      source.duration = m.duration;
      await ensure(0);
    }, { once: true });
  }).catch(fail);

  video.addEventListener("timeupdate", () => {
    if (!manifest) return;
    timeline.value = video.currentTime;
    document.getElementById("position").textContent = fmt(video.currentTime);
    const part = partAt(video.currentTime);
    document.getElementById("wall").textContent = wallAt(part, video.currentTime);
    if (video.currentTime > part.start + part.duration - 2) ensure(part.start + part.duration);
  });
  timeline.addEventListener("change", async () => {
    const t = Number(timeline.value);
    await ensure(t);
    video.currentTime = t;
  });
  video.addEventListener("seeking", () => { if (manifest) ensure(video.currentTime); });
  video.addEventListener("waiting", jumpGap);
})();
