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
    restorePicks();
    const again = rows().findIndex((row) => row.dataset.reference === keep);
    selected = -1;
    if (again >= 0) select(again);
    body.dataset.updated = String(Date.now());
  }

  // Bulk actions (issue 22): the picked cases survive live refreshes of the rows.
  const picked = new Set();
  const count = document.getElementById("bulk-count");
  const result = document.getElementById("bulk-result");
  const action = document.getElementById("bulk-action");
  function counted() {
    count.textContent = `${picked.size} selected`;
  }
  function restorePicks() {
    body.querySelectorAll("input.pick").forEach((box) => {
      box.checked = picked.has(box.value);
    });
  }
  body.addEventListener("change", (event) => {
    const box = event.target;
    if (!box.classList || !box.classList.contains("pick")) return;
    if (box.checked) picked.add(box.value);
    else picked.delete(box.value);
    counted();
  });
  document.getElementById("pick-all").addEventListener("change", (event) => {
    body.querySelectorAll("input.pick").forEach((box) => {
      box.checked = event.target.checked;
      if (box.checked) picked.add(box.value);
      else picked.delete(box.value);
    });
    counted();
  });
  function togglePick() {
    const row = rows()[selected];
    if (!row) return;
    const box = row.querySelector("input.pick");
    box.checked = !box.checked;
    box.dispatchEvent(new Event("change", { bubbles: true }));
  }
  function fieldsFor() {
    const chosen = action.value;
    document.getElementById("bulk-tag-field").hidden = !["tag", "untag"].includes(chosen);
    document.getElementById("bulk-assignee-field").hidden = chosen !== "assign";
    document.getElementById("bulk-until-field").hidden = chosen !== "snooze";
  }
  action.addEventListener("change", fieldsFor);
  fieldsFor();
  document.getElementById("bulk").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const request = { action: action.value, references: Array.from(picked) };
    if (["tag", "untag"].includes(request.action)) request.tags = [form.elements.tag.value];
    if (request.action === "assign") request.assignee = form.elements.assignee.value || null;
    if (request.action === "snooze") request.until = Parity.localTime(form.elements.until.value);
    try {
      const data = await Parity.api("POST", "/api/bulk", request);
      const failures = data.results.filter((r) => !r.ok);
      result.textContent =
        `${data.done} done, ${data.failed} not done` +
        failures.map((r) => ` · ${r.reference}: ${r.error}`).join("");
      result.dataset.done = String(data.done);
      picked.clear();
      counted();
      await refresh();
    } catch (error) {
      result.textContent = error.message;
    }
    result.hidden = false;
  });
  document.getElementById("after-next").addEventListener("change", (event) => {
    Parity.api("PUT", "/api/me/settings", { after_done: event.target.checked ? "next" : "stay" })
      .then(() => show(event.target.checked ? "After resolving or replying: the next case." : "After resolving or replying: stay on the case."))
      .catch((error) => show(error.message));
  });

  document.getElementById("claim-next").addEventListener("click", () => Parity.claimNext(show));
  Parity.onKeys({
    c: () => Parity.claimNext(show),
    j: () => select(selected + 1),
    k: () => select(selected - 1),
    x: togglePick,
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
