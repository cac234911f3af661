// The case page: reply (with a warning on public channels), notes, status, assign (a person
// and a team), claim,
// who else is viewing, remote images on request, and the keyboard shortcuts.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const { reference, base, problem, fail, reload } = Parity.casePage();
  // Flow (issue 22): after a reply or a resolve, the agent's setting says stay (reload) or
  // go on to the next case (claim-next; the queue when there is none).
  async function done() {
    if (document.getElementById("case").dataset.afterDone !== "next") return reload();
    const data = await Parity.api("POST", "/api/queue/claim-next").catch(() => ({}));
    window.location.assign(
      data.case ? `/cases/${encodeURIComponent(data.case.reference)}` : "/queue",
    );
  }
  function finished(id, form) {
    // "Keep open" keeps the agent on the case (claim-next would hand it back anyway).
    if (id === "reply") return form.elements.status.value !== "open";
    return id === "status" && form.elements.status.value === "resolved";
  }
  function on(id, handler) {
    const form = document.getElementById(id);
    if (!form) return;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      problem.hidden = true;
      handler(form).then(finished(id, form) ? done : reload, fail);
    });
  }

  const target = document.getElementById("reply-target");
  const warning = document.getElementById("public-warning");
  function isPublic() {
    return target && target.selectedOptions[0].dataset.public === "yes";
  }
  if (target) {
    const update = () => {
      warning.hidden = !isPublic();
    };
    target.addEventListener("change", update);
    update();
  }
  on("reply", async (form) => {
    const [channel, ...rest] = target.value.split("|");
    if (isPublic() && !window.confirm(`Post this reply publicly on ${channel}?`)) {
      throw new Error("not sent");
    }
    await Parity.api("POST", `${base}/replies`, {
      text: form.elements.text.value,
      channel,
      handle: rest.join("|"),
      status: form.elements.status.value,
      // Copies, files and formatting from the reply form's tools (reply.js).
      ...ParityReply.extras(),
    });
    ParityReply.sent();
  });
  on("note", (form) => Parity.api("POST", `${base}/notes`, { text: form.elements.text.value }));
  on("status", (form) =>
    Parity.api("POST", `${base}/status`, { status: form.elements.status.value }),
  );
  on("assign", (form) =>
    Parity.api("POST", `${base}/assign`, { assignee: form.elements.assignee.value || null }),
  );
  on("team", (form) =>
    Parity.api("POST", `${base}/team`, { team: form.elements.team.value || null }),
  );
  // Browsers do not submit a form on Enter in a <select>; the pickers do, so choosing a
  // person or a team is type-a-few-letters, Enter, without reaching for the button.
  for (const id of ["assignee", "team-choice"]) {
    document.getElementById(id)?.addEventListener("keydown", (event) => {
      if (event.key !== "Enter") return;
      event.preventDefault();
      event.target.form.requestSubmit();
    });
  }
  function resolve() {
    Parity.api("POST", `${base}/status`, { status: "resolved" }).then(done, fail);
  }
  // A merged case has no status or claim controls.
  document.getElementById("resolve")?.addEventListener("click", resolve);
  document
    .getElementById("claim")
    ?.addEventListener("click", () => Parity.api("POST", `${base}/claim`, {}).then(reload, fail));

  // A merge suggestion only fills in the target; the agent reviews and confirms the merge.
  document.querySelectorAll("button.prefill-merge").forEach((button) => {
    button.addEventListener("click", () => {
      const input = document.getElementById("merge-into");
      input.value = button.dataset.into;
      input.focus();
    });
  });

  // Remote images stay blocked until the agent asks, per mail.
  document.querySelectorAll("button.show-images").forEach((button) => {
    button.addEventListener("click", () => {
      const frame = document.querySelector(`#${button.dataset.frame} iframe.mail`);
      frame.src = `${frame.dataset.src}?images=1`;
      button.hidden = true;
    });
  });
  // The frame is sandboxed (no scripts, opaque origin): size it from here is not possible,
  // so it gets a fixed height and scrolls.

  // The reply box is shut while another agent holds the case (the server refuses such a
  // reply anyway; this spares the agent typing it). Each beat brings the lease; a timer
  // re-checks when the other agent's hold ends.
  const replyFields = document.getElementById("reply-fields");
  const replyHeld = document.getElementById("reply-held");
  let leaseTimer = null;
  function showLease(lease) {
    if (!replyFields) return;
    const other = lease && !lease.mine;
    replyFields.disabled = Boolean(other);
    replyHeld.hidden = !other;
    replyHeld.textContent = other
      ? `${lease.holder} holds this case until ${lease.until}: you can reply once they release it or the hold ends.`
      : "";
    clearTimeout(leaseTimer);
    if (other) {
      const left = Date.parse(lease.until) - Date.now();
      leaseTimer = setTimeout(beat, Math.min(Math.max(left, 0) + 1000, 60000));
    }
  }

  // Presence: tell the server I am here, show who else is.
  const viewers = document.getElementById("viewers");
  const me = document.querySelector(".who")?.textContent;
  async function beat() {
    try {
      const data = await Parity.api("POST", `${base}/presence`);
      const others = data.viewers.map((v) => v.user).filter((name) => name !== me);
      viewers.textContent = others.length ? `Also viewing: ${others.join(", ")}` : "";
      showLease(data.lease);
    } catch (error) {
      /* the next beat tries again */
    }
  }
  beat();
  setInterval(beat, 20000);
  // Back on the tab: the hold may have ended meanwhile.
  window.addEventListener("focus", beat);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") beat();
  });
  window.addEventListener("pagehide", () => {
    fetch(`${base}/presence`, {
      method: "DELETE",
      keepalive: true,
      credentials: "same-origin",
      headers: { "X-CSRF-Token": document.querySelector('meta[name="csrf-token"]').content },
    });
  });

  Parity.onKeys({
    c: () => Parity.claimNext(fail),
    r: () => document.getElementById("reply-text")?.focus(),
    e: resolve,
    n: () => document.getElementById("note-text")?.focus(),
    // The person picker: arrows or the first letters of a name choose, Enter assigns.
    a: () => document.getElementById("assignee")?.focus(),
    q: () => window.location.assign("/queue"),
  });
});
