// Export progress on the provision and disclosure pages: poll each running job, reload when it ends.
(function () {
  document.querySelectorAll('.job[data-state="running"]').forEach(function (card) {
    var timer = setInterval(function () {
      fetch(card.dataset.statusUrl, {credentials: 'same-origin'}).then(function (r) { return r.json(); }).then(function (s) {
        var bar = card.querySelector('progress');
        if (bar) { bar.max = s.total || 1; bar.value = s.done; }
        var text = card.querySelector('.progress-text');
        if (text) { text.textContent = s.done.toFixed(1) + ' / ' + s.total.toFixed(1) + ' s'; }
        if (s.state !== 'running') { clearInterval(timer); location.reload(); }
      });
    }, 1000);
  });
})();
