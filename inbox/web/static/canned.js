// The canned replies page: add, edit and delete through the JSON API (issue 22).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("canned-form");
  const problem = document.getElementById("canned-error");
  const byId = {};
  function fail(error) {
    problem.textContent = error.message;
    problem.hidden = false;
  }
  async function load() {
    for (const c of (await Parity.api("GET", "/api/canned")).canned) byId[c.id] = c;
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    problem.hidden = true;
    const variants = {};
    document.querySelectorAll("textarea.canned-variant").forEach((area) => {
      if (area.value.trim()) variants[area.dataset.channel] = area.value;
    });
    const id = document.getElementById("canned-id").value;
    const body = {
      title: document.getElementById("canned-title").value,
      body: document.getElementById("canned-body").value,
      variants,
    };
    const call = id
      ? Parity.api("PUT", `/api/canned/${id}`, body)
      : Parity.api("POST", "/api/canned", {
          ...body,
          personal: document.getElementById("canned-personal").checked,
        });
    call.then(() => window.location.reload(), fail);
  });
  document.querySelectorAll("button.edit-canned").forEach((button) => {
    button.addEventListener("click", async () => {
      await load();
      const c = byId[button.dataset.id];
      document.getElementById("canned-id").value = c.id;
      document.getElementById("canned-title").value = c.title;
      document.getElementById("canned-body").value = c.body;
      document.querySelectorAll("textarea.canned-variant").forEach((area) => {
        area.value = c.variants[area.dataset.channel] || "";
      });
      document.getElementById("canned-form-title").textContent = `Edit “${c.title}”`;
      document.getElementById("canned-title").focus();
    });
  });
  document.querySelectorAll("button.delete-canned").forEach((button) => {
    button.addEventListener("click", () => {
      if (!window.confirm("Delete this canned reply?")) return;
      Parity.api("DELETE", `/api/canned/${button.dataset.id}`).then(
        () => window.location.reload(),
        fail,
      );
    });
  });
});
