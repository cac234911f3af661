// The search page: move through the results and open one from the keyboard.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const body = document.getElementById("queue-rows");
  let selected = -1;
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
  Parity.onKeys({
    j: () => select(selected + 1),
    k: () => select(selected - 1),
    Enter: () => {
      const row = rows()[selected];
      if (row) window.location.assign(`/cases/${encodeURIComponent(row.dataset.reference)}`);
    },
    q: () => window.location.assign("/queue"),
  });
  // From the search box, Down moves into the results without the mouse.
  document.getElementById("search-q").addEventListener("keydown", (event) => {
    if (event.key === "ArrowDown") {
      event.preventDefault();
      event.target.blur();
      select(0);
    }
  });
});
