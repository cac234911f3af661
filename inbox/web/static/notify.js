// Notifications (issue 22), on every signed-in page: the bell's unread count, browser
// notifications for ones that arrive while the page is open, and the notifications page.
// They arrive on the agent's own live stream (/events/notifications: the listing at once,
// then again whenever one is added or read); /api/notifications is asked only while the
// stream is down, every data-poll-seconds of the bell.
"use strict";
(() => {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const count = document.getElementById("bell-count");
  if (!count) return;
  const bell = document.getElementById("bell");
  const FALLBACK_MS = 1000 * (Number(count.dataset.pollSeconds) || 60);
  async function api(method, path, body) {
    const options = { method, headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(path, options);
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.error || `${response.status} ${response.statusText}`);
    return data;
  }
  function showCount(unread) {
    count.textContent = String(unread);
    count.hidden = unread === 0;
    bell.setAttribute("aria-label", `Notifications: ${unread} unread`);
  }
  // Only notifications newer than what the page saw first are news: a reload never
  // replays old ones as browser notifications.
  let newest = null;
  function announce(items, browser) {
    const fresh = newest === null ? [] : items.filter((n) => n.id > newest && !n.read_at);
    newest = Math.max(newest ?? 0, ...items.map((n) => n.id));
    if (!browser || !("Notification" in window) || Notification.permission !== "granted") return;
    for (const n of fresh.reverse()) {
      const shown = new Notification("Parity", { body: n.text, tag: `parity-${n.id}` });
      shown.onclick = () => {
        window.focus();
        window.location.assign(`/cases/${encodeURIComponent(n.reference)}`);
      };
    }
  }
  // On a case's page its own notifications are read: the agent is looking at it.
  const here = /^\/cases\/([^/]+)$/.exec(window.location.pathname);
  const hereRef = here ? decodeURIComponent(here[1]) : null;
  // One listing, from the stream or a poll.
  async function apply(data) {
    const seen = data.notifications.filter((n) => !n.read_at && n.reference === hereRef);
    let unread = data.unread;
    if (seen.length) {
      // The stream sends the listing again once they are read; the count is known now.
      unread = (await api("POST", "/api/notifications/read", { ids: seen.map((n) => n.id) }))
        .unread;
    }
    showCount(unread);
    announce(data.notifications.filter((n) => n.reference !== hereRef), data.browser);
  }
  async function poll() {
    try {
      await apply(await api("GET", "/api/notifications?limit=20"));
    } catch (error) {
      // Logged out or offline: the next poll tries again; the page says nothing new.
    }
  }
  let stream = null;
  function connect() {
    stream = new EventSource("/events/notifications");
    stream.addEventListener("open", () => {
      bell.dataset.live = "on";
    });
    // The browser reconnects by itself (the stream says how soon); a refused stream (the
    // session ended) stays closed until the fallback below opens it again.
    stream.addEventListener("error", () => {
      bell.dataset.live = "off";
    });
    stream.addEventListener("notifications", (event) => {
      apply(JSON.parse(event.data)).catch(() => {});
    });
  }
  connect();
  setInterval(() => {
    if (stream.readyState === EventSource.OPEN) return;
    if (stream.readyState === EventSource.CLOSED) connect();
    poll();
  }, FALLBACK_MS);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && stream.readyState !== EventSource.OPEN) poll();
  });

  // --- the notifications page ---
  const page = document.getElementById("notify-page");
  if (!page) return;
  const status = document.getElementById("notify-status");
  async function markRead(body) {
    try {
      const data = await api("POST", "/api/notifications/read", body);
      showCount(data.unread);
      const ids = body.all ? null : new Set(body.ids);
      page.querySelectorAll(".notify-item.unread").forEach((item) => {
        if (ids === null || ids.has(Number(item.dataset.id))) {
          item.classList.replace("unread", "read");
          item.querySelector(".notify-read")?.remove();
        }
      });
      document.getElementById("notify-read-all").disabled = data.unread === 0;
    } catch (error) {
      status.textContent = error.message;
    }
  }
  page.addEventListener("click", (event) => {
    const button = event.target.closest(".notify-read");
    if (button) markRead({ ids: [Number(button.dataset.id)] });
  });
  document.getElementById("notify-read-all").addEventListener("click", () => markRead({ all: true }));
  // The browser asks for permission only on the agent's click, never on its own.
  const permission = document.getElementById("notify-permission");
  const permissionState = document.getElementById("notify-permission-state");
  function showPermission() {
    if (!("Notification" in window)) {
      permission.disabled = true;
      permissionState.textContent = "This browser has no notifications.";
      return;
    }
    permissionState.textContent = {
      granted: "Allowed.",
      denied: "Blocked: allow them in the browser's site settings.",
      default: "Not asked yet.",
    }[Notification.permission];
    permission.disabled = Notification.permission !== "default";
  }
  permission.addEventListener("click", async () => {
    await Notification.requestPermission();
    showPermission();
  });
  showPermission();
  document.getElementById("notify-settings").addEventListener("submit", async (event) => {
    event.preventDefault();
    const saved = document.getElementById("notify-saved");
    const kinds = [...page.querySelectorAll(".notify-kind")].filter((b) => b.checked).map((b) => b.value);
    try {
      await api("PUT", "/api/me/notifications", {
        kinds,
        browser: document.getElementById("notify-browser").checked,
        digest: document.getElementById("notify-digest").checked,
        address: document.getElementById("notify-address").value.trim() || null,
      });
      saved.textContent = "Saved.";
    } catch (error) {
      saved.textContent = error.message;
    }
  });
})();
