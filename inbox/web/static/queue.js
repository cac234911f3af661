// The queue: claim next, keyboard moves, and live rows from server-sent events.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const body = document.getElementById("queue-rows");
  const notice = document.getElementById("notice");
  const live = document.getElementById("live");
  let selected = -1;

  function show(text) {
    notice.textContent = text;
    notice.hidden = false;
  }
  function rows() {
    return Array.from(body.querySelectorAll("tr[data-reference]"));
  }
  function select(index) {
    const all = rows();
    if (!all.length) return;
    selected = Math.max(0, Math.min(all.length - 1, index));
    all.forEach((row, i) => row.classList.toggle("selected", i === selected));
    all[selected].scrollIntoView({ block: "nearest" });
  }
  function open() {
    const row = rows()[selected];
    if (row) window.location.assign(`/cases/${encodeURIComponent(row.dataset.reference)}`);
  }
  async function refresh() {
    // Same filters as the page: the server renders the rows with the page's own template.
    const response = await fetch(`/queue/rows${window.location.search}`, {
      credentials: "same-origin",
    });
    if (!response.ok) return;
    const current = rows()[selected];
    const keep = current ? current.dataset.reference : null;
    body.innerHTML = await response.text();
    const again = rows().findIndex((row) => row.dataset.reference === keep);
    selected = -1;
    if (again >= 0) select(again);
    body.dataset.updated = String(Date.now());
  }

  document.getElementById("claim-next").addEventListener("click", () => Parity.claimNext(show));
  Parity.onKeys({
    c: () => Parity.claimNext(show),
    j: () => select(selected + 1),
    k: () => select(selected - 1),
    Enter: open,
  });

  const events = new EventSource("/events/queue");
  events.addEventListener("open", () => {
    live.textContent = "live updates: on";
    live.dataset.state = "on";
  });
  events.addEventListener("error", () => {
    live.textContent = "live updates: reconnecting…";
    live.dataset.state = "off";
  });
  events.addEventListener("queue", () => {
    refresh();
  });
});
