// The viewing player: the approved parts, decrypted in the server's memory, appended to a
// Media Source one after another; seeking fetches the part that holds the time asked for.
// A scope with several tracks (at the hub: a counter's footage and a call of the same case)
// gets a player per track, side by side, each with its own timeline and wall clock.
"use strict";
(function () {
  const tracks = document.getElementById("tracks");
  const fmt = (s) => `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, "0")}`;

  function fail(e) {
    document.getElementById("player-error").hidden = false;
    console.error(e);
  }

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

  function play(section, track) {
    const video = section.querySelector("video");
    const timeline = section.querySelector(".seek");
    const parts = track.parts;
    let source = null;
    let buffer = null;
    const loaded = new Set();  // asked for (by index in this track)
    const placed = new Set();  // appended (or empty)
    let loading = null;

    function indexAt(t) {
      for (let i = parts.length - 1; i >= 0; i--) if (t >= parts[i].start) return i;
      return 0;
    }

    function appended() {
      return new Promise((resolve) => buffer.addEventListener("updateend", resolve, { once: true }));
    }

    async function load(i) {
      if (loaded.has(i)) return;
      loaded.add(i);
      const part = parts[i];
      try {
        const response = await fetch(tracks.dataset.parts + part.n + ".mp4", { cache: "no-store" });
        if (response.status === 204) {  // nothing inside the approved range to show
          placed.add(i);
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
        placed.add(i);
        finish();
      } catch (e) {
        loaded.delete(i);  // try again when it is needed next
        throw e;
      }
    }

    function finish() {
      // Once the last part is in, the stream is ended: playback then runs to the end of the
      // picture, not only to where the sound ends (cut in whole frames, a little earlier), and
      // the player stops as ended. Appending an earlier part after a seek opens it again.
      if (placed.has(parts.length - 1) && source.readyState === "open" && !buffer.updating) {
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

    function ensure(t) {
      // The part under t and the one after it, so playback runs on across the boundary.
      const i = indexAt(t);
      loading = (loading || Promise.resolve()).then(() => load(i))
        .then(() => i + 1 < parts.length && load(i + 1)).catch(fail);
      return loading;
    }

    timeline.max = track.duration;
    section.querySelector(".total").textContent = fmt(track.duration);
    source = new MediaSource();
    video.src = URL.createObjectURL(source);
    source.addEventListener("sourceopen", async () => {
      buffer = source.addSourceBuffer(`video/mp4; codecs="${track.codecs}"`);
      buffer.mode = "segments";
      source.duration = track.duration;
      await ensure(0);
    }, { once: true });

    video.addEventListener("timeupdate", () => {
      timeline.value = video.currentTime;
      section.querySelector(".position").textContent = fmt(video.currentTime);
      const part = parts[indexAt(video.currentTime)];
      section.querySelector(".wall").textContent = wallAt(part, video.currentTime);
      if (video.currentTime > part.start + part.duration - 2) ensure(part.start + part.duration);
    });
    timeline.addEventListener("change", async () => {
      const t = Number(timeline.value);
      await ensure(t);
      video.currentTime = t;
    });
    video.addEventListener("seeking", () => ensure(video.currentTime));
    video.addEventListener("waiting", jumpGap);
  }

  fetch(tracks.dataset.manifest, { cache: "no-store" }).then((r) => r.json()).then((m) => {
    const list = m.tracks && m.tracks.length ? m.tracks : [m];
    const first = tracks.querySelector(".track");
    list.forEach((track, i) => {
      let section = first;
      if (i > 0) {  // the first track's player, again, without its ids
        section = first.cloneNode(true);
        section.querySelectorAll("[id]").forEach((el) => { el.id = `${el.id}-${i}`; });
        tracks.appendChild(section);
      }
      if (list.length > 1) {
        const label = section.querySelector(".track-label");
        label.textContent = [track.place || track.device, track.sound_only ? tracks.dataset.call
          : tracks.dataset.footage].filter(Boolean).join(" — ");
        label.hidden = false;
        tracks.classList.add("side-by-side");
      }
      play(section, track);
    });
  }).catch(fail);
})();
