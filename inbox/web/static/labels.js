// The case page's tags, custom fields and snooze (issue 22), beside case.js.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const { base, problem, fail, reload } = Parity.casePage();
  function submit(id, handler) {
    const form = document.getElementById(id);
    if (!form) return;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      problem.hidden = true;
      handler(form).then(reload, fail);
    });
  }
  submit("tag-form", (form) => Parity.api("POST", `${base}/tags`, { add: [form.elements.tag.value] }));
  document.querySelectorAll("button.untag").forEach((button) => {
    button.addEventListener("click", () => {
      Parity.api("POST", `${base}/tags`, { remove: [button.dataset.tag] }).then(reload, fail);
    });
  });
  submit("field-form", (form) =>
    Parity.api("POST", `${base}/fields`, {
      name: form.elements.name.value,
      value: form.elements.value.value || null,
    }),
  );
  function afterSnooze() {
    // A snoozed case is out of the queue: on to the next case, or back to the queue.
    window.location.assign("/queue");
  }
  const snoozeForm = document.getElementById("snooze-form");
  if (snoozeForm) {
    snoozeForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const until = Parity.localTime(snoozeForm.elements.until.value);
      if (!until) {
        fail(new Error("choose a time, or snooze until the customer answers"));
        return;
      }
      Parity.api("POST", `${base}/snooze`, { until }).then(afterSnooze, fail);
    });
    document.getElementById("snooze-reply").addEventListener("click", () => {
      Parity.api("POST", `${base}/snooze`, { until: null }).then(afterSnooze, fail);
    });
    document.getElementById("wake")?.addEventListener("click", () => {
      Parity.api("DELETE", `${base}/snooze`).then(reload, fail);
    });
  }
  Parity.onKeys({
    t: () => document.getElementById("tag-input")?.focus(),
    s: () => document.getElementById("snooze-until")?.focus(),
  });
});
