// The login form posts JSON to /api/login (a cross-site form cannot), then follows ?next.
"use strict";
// The server already checked ?next; the browser checks again with its own URL parser, which
// is the one that decides where the page goes: only a path on this origin, else the queue.
function sameOriginPath(next) {
  if (!next || !/^\/(?![/\\])[!-[\]-~]*$/.test(next)) return "/queue";
  let url;
  try {
    url = new URL(next, window.location.origin);
  } catch (error) {
    return "/queue";
  }
  if (url.origin !== window.location.origin) return "/queue";
  // The whole URL, not its path: "/..//x" has the path "//x", which would leave the origin.
  return url.href;
}
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("login");
  const problem = document.getElementById("login-error");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    problem.hidden = true;
    const response = await fetch("/api/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      credentials: "same-origin",
      body: JSON.stringify({
        name: form.elements.name.value,
        password: form.elements.password.value,
      }),
    });
    if (response.ok) {
      window.location.assign(sameOriginPath(form.dataset.next));
      return;
    }
    const data = await response.json().catch(() => ({}));
    problem.textContent = data.error || "could not log in";
    problem.hidden = false;
  });
});
