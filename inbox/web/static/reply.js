// The reply form's tools (issue 22): copies with new addresses marked, files uploaded as
// they are chosen (refused with the reason where the channel takes none), canned replies
// inserted with "#" or the button and edited before sending, the length against the
// channel's limit, and the draft kept on the server as the agent types.
// case.js sends the reply with ParityReply.extras() and calls ParityReply.sent().
"use strict";
const ParityReply = (() => {
  let files = []; // {id, filename, size}
  let known = new Set();
  let saveTimer = null;
  let ready = false;
  const $ = (id) => document.getElementById(id);

  function option() {
    const target = $("reply-target");
    return target ? target.selectedOptions[0] : null;
  }
  function channel() {
    const o = option();
    return o ? o.value.split("|")[0] : "";
  }
  function addresses(value) {
    return value
      .split(/[,;\s]+/)
      .map((a) => a.trim())
      .filter((a) => a.includes("@"));
  }
  function extras() {
    const o = option();
    const copies = o && o.dataset.copies === "yes";
    const markdown = $("reply-markdown");
    return {
      cc: copies ? addresses($("reply-cc").value) : [],
      bcc: copies ? addresses($("reply-bcc").value) : [],
      attachments: files.map((f) => f.id),
      markdown: markdown ? markdown.checked : true,
    };
  }

  // --- copies: an address the case has not seen is marked as new before sending ---
  function showNew() {
    const typed = [...addresses($("reply-cc").value), ...addresses($("reply-bcc").value)];
    const fresh = typed.filter((a) => !known.has(a.toLowerCase()));
    const line = $("copy-new");
    line.hidden = fresh.length === 0;
    line.textContent = fresh.length
      ? `New to this case: ${fresh.join(", ")}. Check before sending.`
      : "";
  }

  // --- the length against the channel's limit (registry facts) ---
  function showFit() {
    const o = option();
    const fit = $("reply-fit");
    if (!o || !fit) return;
    const text = $("reply-text").value;
    const limit = Number(o.dataset.limit);
    let segment = Number(o.dataset.segment);
    let parts = 1;
    if (segment && /[^\x00-\x7f]/.test(text)) segment = Math.floor((segment * 7) / 16);
    if (segment && text.length > segment) {
      parts = Math.ceil(text.length / (segment - (segment > 100 ? 7 : 3)));
    }
    const over = text.length > limit;
    fit.classList.toggle("over", over);
    fit.textContent = over
      ? `${text.length} characters: ${channel()} takes at most ${limit}`
      : parts > 1
        ? `${text.length} characters: sent as ${parts} ${channel()} parts`
        : `${text.length} of ${limit} characters`;
  }

  // --- what this channel takes: files, copies, Markdown ---
  function showChannel() {
    const o = option();
    if (!o) return;
    const refused = o.dataset.files;
    $("reply-files").disabled = Boolean(refused);
    const line = $("files-refused");
    line.hidden = !refused;
    line.textContent = refused ? `Files: ${refused}.` : "";
    if (refused && files.length) line.textContent += " The attached files would not be sent.";
    $("reply-copies").hidden = o.dataset.copies !== "yes";
    $("reply-markdown-label").hidden = o.dataset.format !== "markdown";
    showFit();
  }

  // --- files: uploaded when chosen, listed with a remove button ---
  function listFiles() {
    const list = $("reply-file-list");
    list.replaceChildren(
      ...files.map((f) => {
        const li = document.createElement("li");
        li.dataset.upload = f.id;
        li.textContent = `📎 ${f.filename} (${f.size} B) `;
        const remove = document.createElement("button");
        remove.type = "button";
        remove.className = "link remove-file";
        remove.textContent = "remove";
        remove.setAttribute("aria-label", `remove ${f.filename}`);
        remove.addEventListener("click", () => {
          files = files.filter((x) => x.id !== f.id);
          listFiles();
          queueSave();
        });
        li.append(remove);
        return li;
      }),
    );
  }
  async function upload(reference, file) {
    const form = new FormData();
    form.append("file", file, file.name);
    const response = await fetch(`/api/cases/${encodeURIComponent(reference)}/uploads`, {
      method: "POST",
      body: form,
      credentials: "same-origin",
      headers: { "X-CSRF-Token": document.querySelector('meta[name="csrf-token"]').content },
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.error || `${response.status} ${response.statusText}`);
    return data.upload;
  }

  // --- the draft: saved a moment after the agent stops typing, restored on load ---
  function draftBody() {
    return {
      text: $("reply-text").value,
      target: $("reply-target").value,
      cc: addresses($("reply-cc").value),
      bcc: addresses($("reply-bcc").value),
      attachments: files.map((f) => f.id),
      markdown: $("reply-markdown").checked,
    };
  }
  function queueSave() {
    if (!ready) return;
    clearTimeout(saveTimer);
    saveTimer = setTimeout(save, 600);
  }
  async function save() {
    const reference = $("case").dataset.reference;
    try {
      await Parity.api("PUT", `/api/cases/${encodeURIComponent(reference)}/draft`, draftBody());
      $("draft-state").textContent = "Draft saved.";
    } catch (error) {
      $("draft-state").textContent = `Draft not saved: ${error.message}`;
    }
  }
  async function restore(reference) {
    const data = await Parity.api("GET", `/api/cases/${encodeURIComponent(reference)}/draft`);
    known = new Set(data.known_addresses.map((a) => a.toLowerCase()));
    const draft = data.draft;
    if (draft.text && !$("reply-text").value) {
      $("reply-text").value = draft.text;
      $("draft-state").textContent = "Your draft is back.";
    }
    const target = $("reply-target");
    if (draft.target && [...target.options].some((o) => o.value === draft.target)) {
      target.value = draft.target;
    }
    $("reply-cc").value = draft.cc.join(", ");
    $("reply-bcc").value = draft.bcc.join(", ");
    $("reply-markdown").checked = draft.markdown;
    files = data.files;
    listFiles();
  }

  // --- canned replies: "#" or the button opens the picker; arrows, Enter, Escape ---
  let canned = null;
  let picking = null; // {start, items, index}
  async function loadCanned() {
    if (canned === null) canned = (await Parity.api("GET", "/api/canned")).canned;
    return canned;
  }
  function closePicker() {
    picking = null;
    $("canned-picker").hidden = true;
  }
  function drawPicker() {
    const picker = $("canned-picker");
    picker.replaceChildren(
      ...picking.items.map((c, i) => {
        const li = document.createElement("li");
        li.role = "option";
        li.id = `canned-${c.id}`;
        li.dataset.canned = c.id;
        li.textContent = c.personal ? `${c.title} (mine)` : c.title;
        li.setAttribute("aria-selected", i === picking.index ? "true" : "false");
        li.addEventListener("mousedown", (event) => {
          event.preventDefault();
          picking.index = i;
          choose();
        });
        return li;
      }),
    );
    if (!picking.items.length) {
      const li = document.createElement("li");
      li.className = "empty";
      li.textContent = "No canned reply matches.";
      picker.append(li);
    }
    picker.hidden = false;
  }
  async function openPicker(start) {
    const all = await loadCanned();
    const text = $("reply-text");
    const query = text.value.slice(start + 1, text.selectionStart).toLowerCase();
    picking = {
      start,
      index: 0,
      items: all.filter((c) => c.title.toLowerCase().includes(query)).slice(0, 20),
    };
    drawPicker();
  }
  async function choose() {
    if (!picking || !picking.items.length) return;
    const item = picking.items[picking.index];
    const reference = $("case").dataset.reference;
    const text = $("reply-text");
    const start = picking.start;
    const end = text.selectionStart;
    closePicker();
    const filled = await Parity.api(
      "GET",
      `/api/canned/${item.id}/render?case=${encodeURIComponent(reference)}&channel=${encodeURIComponent(channel())}`,
    );
    // The "#query" typed is replaced; the agent edits the text before sending.
    text.value = text.value.slice(0, start) + filled.text + text.value.slice(end);
    const caret = start + filled.text.length;
    text.focus();
    text.setSelectionRange(caret, caret);
    showFit();
    queueSave();
  }
  function hashStart(text) {
    // A "#" at the start or after white space, with no white space typed after it yet.
    const before = text.value.slice(0, text.selectionStart);
    const match = /(^|\s)#[^\s#]*$/.exec(before);
    return match ? before.length - match[0].length + match[1].length : -1;
  }

  function init() {
    const form = $("reply");
    const text = $("reply-text");
    if (!form || !text || !$("reply-target")) return;
    const reference = $("case").dataset.reference;
    $("reply-target").addEventListener("change", () => {
      showChannel();
      queueSave();
    });
    for (const id of ["reply-cc", "reply-bcc"]) {
      $(id).addEventListener("input", () => {
        showNew();
        queueSave();
      });
    }
    $("reply-markdown").addEventListener("change", queueSave);
    text.addEventListener("input", () => {
      showFit();
      queueSave();
      const start = hashStart(text);
      if (start >= 0) openPicker(start).catch(() => closePicker());
      else closePicker();
    });
    text.addEventListener("keydown", (event) => {
      if (!picking) return;
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        event.preventDefault();
        const step = event.key === "ArrowDown" ? 1 : -1;
        const count = picking.items.length || 1;
        picking.index = (picking.index + step + count) % count;
        drawPicker();
      } else if (event.key === "Enter" || event.key === "Tab") {
        if (picking.items.length) {
          event.preventDefault();
          choose();
        }
      } else if (event.key === "Escape") {
        event.preventDefault();
        closePicker();
      }
    });
    text.addEventListener("blur", () => setTimeout(closePicker, 150));
    $("canned-open").addEventListener("click", () => {
      // The button inserts at the caret, as if "#" had been typed there.
      const at = text.selectionStart ?? text.value.length;
      const pad = at > 0 && !/\s/.test(text.value[at - 1]) ? " " : "";
      text.value = `${text.value.slice(0, at)}${pad}#${text.value.slice(at)}`;
      text.focus();
      text.setSelectionRange(at + pad.length + 1, at + pad.length + 1);
      openPicker(at + pad.length);
    });
    $("reply-files").addEventListener("change", async (event) => {
      const chosen = [...event.target.files];
      event.target.value = "";
      for (const file of chosen) {
        try {
          files.push(await upload(reference, file));
        } catch (error) {
          $("files-refused").hidden = false;
          $("files-refused").textContent = `${file.name}: ${error.message}`;
        }
      }
      listFiles();
      queueSave();
    });
    restore(reference)
      .catch(() => null)
      .finally(() => {
        ready = true;
        showChannel();
        showNew();
      });
    showChannel();
  }
  function sent() {
    clearTimeout(saveTimer);
    ready = false; // the server dropped the draft with the reply
  }
  // A preview whose bytes are not a raster image gets no inline answer from the server
  // (it sniffs them): drop the empty frame, the file stays listed as a download.
  function previews() {
    document.querySelectorAll("img.preview").forEach((img) => {
      const drop = () => img.remove();
      if (img.complete && img.naturalWidth === 0) drop();
      else img.addEventListener("error", drop);
    });
  }
  document.addEventListener("DOMContentLoaded", previews);
  document.addEventListener("DOMContentLoaded", init);
  return { extras, sent };
})();
