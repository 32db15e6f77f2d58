// mmsearch page: live writes through /api/documents (docs/writes.md), shown only to a key that may write.
// - "Add a document": an id and the scene's fields (a text scene: the fields its text template embeds, from
//   /api/scenes' text_fields, and question and answer, the fields its cards show; an image scene: the image,
//   dropped or chosen, and its name), plus the fields the scene declares (keyword, number, bool); the writer
//   names any field it refuses.
// - "Delete" on each result, two clicks (the first arms it), no dialog.
// After an acknowledged write the search runs again, so the new item shows and a deleted one goes.
// Same rule as app.js: text from the user or the API goes in with textContent, never innerHTML.
"use strict";

(() => {
  const page = window.mmsearch;
  const $ = (id) => document.getElementById(id);
  const els = {
    add: $("add"), form: $("add-form"), id: $("add-id"), drop: $("add-drop"), dropLabel: $("add-drop-label"),
    image: $("add-image"), fields: $("add-fields"), go: $("add-go"), status: $("add-status"), results: $("results"),
  };
  // whoami: {key_id, scopes, scenes} of the key in use (null: none that whoami accepts); file: the image to add.
  const state = { whoami: null, scene: null, file: null, asked: 0 };
  const ARMED_MS = 4000;  // how long a first click on "Delete" waits for the second

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function canWrite(scene) {
    const who = state.whoami;
    return Boolean(who && scene && (who.scopes || []).includes("write")
      && (who.scenes === null || (who.scenes || []).includes(scene)));
  }

  async function askWhoami() {
    const asked = ++state.asked;
    delete document.body.dataset.writes;
    let who = null;
    try {
      const response = await fetch("/api/whoami", { headers: page.headers() });
      if (response.ok) who = await response.json();
    } catch (_) { who = null; }
    if (asked !== state.asked) return;  // a newer key's answer wins
    state.whoami = who;
    // "yes": the key may write some scene (the form shows on those); "no": it may not (tests wait on it)
    document.body.dataset.writes = who && (who.scopes || []).includes("write") ? "yes" : "no";
    showForm();
    markResults();
  }

  // ---- the add form ------------------------------------------------------------------------------
  function fieldInput(name, type, multiline) {
    const label = el("label", "add-field", name + " ");
    const input = el(multiline ? "textarea" : "input");
    input.name = name;
    input.dataset.field = name;
    input.dataset.type = type;
    if (!multiline) input.type = type === "number" ? "number" : type === "bool" ? "checkbox" : "text";
    if (type === "number") input.step = "any";
    if (multiline) input.rows = 3;
    label.appendChild(input);
    return label;
  }

  function renderFields(info) {
    while (els.fields.firstChild) els.fields.removeChild(els.fields.firstChild);
    const image = info.modality === "image";
    // A text scene: the fields its live version embeds (text_fields, from its text template), then question
    // and answer where the template names neither (the fields its cards show).
    const texts = image ? ["name"] : [...new Set([...(info.text_fields || []), "question", "answer"])];
    const own = texts.map((name) => [name, "keyword", name === "answer"]);
    const names = new Set(texts);
    for (const [name, type, multiline] of own) els.fields.appendChild(fieldInput(name, type, multiline));
    for (const f of info.fields || []) {
      if (!names.has(f.name) && ["keyword", "number", "bool"].includes(f.type)) {
        els.fields.appendChild(fieldInput(f.name, f.type, false));
      }
    }
    els.drop.hidden = !image;
    setFile(null);
  }

  function showForm() {
    const info = state.scene;
    const allowed = Boolean(info) && canWrite(info.name);
    els.add.hidden = !allowed;
    if (!allowed) return;
    if (els.form.dataset.scene !== info.name) {
      els.form.dataset.scene = info.name;
      renderFields(info);
      status("", "");
    }
  }

  function status(message, kind) {
    els.status.textContent = message;
    els.status.dataset.kind = kind;
  }

  function setFile(file) {
    state.file = file;
    els.dropLabel.textContent = file ? file.name : "Drop an image here, or choose one…";
    els.drop.classList.toggle("has-file", Boolean(file));
  }

  function base64Of(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(String(reader.result).replace(/^data:[^,]*,/, ""));
      reader.onerror = () => reject(reader.error || new Error("the file cannot be read"));
      reader.readAsDataURL(file);
    });
  }

  // The document the form describes, or a message naming what to fix.
  function readForm() {
    const id = els.id.value.trim();
    if (!/^\d+$/.test(id)) return { problem: "id: give a whole number (the document's id)" };
    const fields = {};
    for (const input of els.fields.querySelectorAll("[data-field]")) {
      const name = input.dataset.field;
      if (input.dataset.type === "bool") fields[name] = input.checked;
      else if (input.dataset.type === "number") {
        if (input.value.trim() === "") continue;  // the writer says so if the scene needs it
        const value = Number(input.value);
        if (!Number.isFinite(value)) return { problem: name + ": give a number" };
        fields[name] = value;
      } else if (input.value.trim() !== "") fields[name] = input.value.trim();
    }
    if (state.scene.modality === "image" && !state.file) return { problem: "image: drop or choose the image to add" };
    const embedded = (state.scene.text_fields || []).map((name) => fields[name]).find((value) => value);
    return { document: { id: Number(id), fields }, text: embedded || fields.answer || fields.question || fields.name || "" };
  }

  async function add(event) {
    event.preventDefault();
    const info = state.scene;
    const { problem, document: doc, text } = readForm();
    if (problem) { status(problem, "error"); return; }
    els.go.disabled = true;
    status("Adding #" + doc.id + "…", "busy");
    try {
      if (state.file) doc.image_base64 = await base64Of(state.file);
      const response = await fetch("/api/documents", {
        method: "POST", body: JSON.stringify({ scene: info.name, documents: [doc] }),
        headers: page.headers({ "Content-Type": "application/json" }),
      });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) { status("Not added: " + page.errorText(body, response), "error"); return; }
      const result = (body.results || [])[0] || {};
      if (result.status === "refused") {
        status("Not added: " + (result.field ? result.field + ": " : "") + result.reason, "error");
        return;
      }
      status((result.status === "unchanged" ? "Unchanged (the same content): #" : "Added #") + doc.id, "done");
      els.form.reset();
      setFile(null);
      page.refresh(text);
    } catch (err) {
      status("Not added: the web service cannot be reached (" + err.message + ")", "error");
    } finally {
      els.go.disabled = false;
    }
  }

  // ---- delete buttons ----------------------------------------------------------------------------
  function markResults() {
    const info = page.scene();
    const allowed = Boolean(info) && canWrite(info.name);
    for (const node of els.results.querySelectorAll(".result")) {
      const existing = node.querySelector("button.delete");
      if (!allowed) { if (existing) existing.remove(); continue; }
      if (existing) continue;
      const button = el("button", "delete", "Delete");
      button.type = "button";
      button.setAttribute("aria-label", "Delete #" + node.dataset.id);
      button.addEventListener("click", () => remove(node, button, info.name));
      (node.querySelector(".card-foot") || node).appendChild(button);
    }
  }

  async function remove(node, button, scene) {
    if (!button.dataset.armed) {  // the first click arms it: a misclick deletes nothing
      button.dataset.armed = "true";
      button.textContent = "Delete #" + node.dataset.id + "?";
      window.setTimeout(() => { delete button.dataset.armed; button.textContent = "Delete"; }, ARMED_MS);
      return;
    }
    button.disabled = true;
    const params = new URLSearchParams({ scene, id: node.dataset.id });
    try {
      const response = await fetch("/api/documents?" + params.toString(),
        { method: "DELETE", headers: page.headers() });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(page.errorText(body, response));
      const result = (body.results || [])[0] || {};
      if (result.status === "refused") throw new Error((result.field ? result.field + ": " : "") + result.reason);
      node.remove();
      page.refresh("");
    } catch (err) {
      button.disabled = false;
      page.banner("Not deleted: " + err.message, "error");
    }
  }

  // ---- wiring ------------------------------------------------------------------------------------
  els.form.addEventListener("submit", add);
  els.image.addEventListener("change", () => setFile((els.image.files && els.image.files[0]) || null));
  els.drop.addEventListener("dragover", (event) => { event.preventDefault(); els.drop.classList.add("over"); });
  els.drop.addEventListener("dragleave", () => els.drop.classList.remove("over"));
  els.drop.addEventListener("drop", (event) => {
    event.preventDefault();
    els.drop.classList.remove("over");
    const file = event.dataTransfer && event.dataTransfer.files && event.dataTransfer.files[0];
    if (file && file.type.startsWith("image/")) setFile(file);
    else status("image: drop an image file", "error");
  });
  document.addEventListener("mmsearch:scene", (event) => { state.scene = event.detail.scene; showForm(); });
  document.addEventListener("mmsearch:results", markResults);
  document.addEventListener("mmsearch:key", askWhoami);
  document.addEventListener("DOMContentLoaded", askWhoami);
})();
