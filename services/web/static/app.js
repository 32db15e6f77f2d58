// mmsearch search page. No framework, no CDN: works offline.
// Rule: everything that comes from the user or the API is inserted with
// textContent / setAttribute on elements built here, never with innerHTML.
"use strict";

(() => {
  const DEBOUNCE_MS = 250;
  const $ = (id) => document.getElementById(id);
  const els = {
    scenes: $("scenes"), form: $("search-form"), q: $("q"), k: $("k"), upload: $("upload"),
    image: $("image"), banner: $("banner"), meta: $("meta"), summaryLine: $("summary-line"),
    timings: $("timings"), preview: $("preview"), results: $("results"), filters: $("filters"),
    activeFilters: $("active-filters"), facets: $("facets"), pager: $("pager"), more: $("more"),
    keyForm: $("key-form"), apiKey: $("api-key"), keyOpen: $("key-open"), sort: $("sort"), collapse: $("collapse"),
    sceneNote: $("scene-note"),
  };
  // The API key the user gave (sent as X-API-Key), kept for this tab only; none: anonymous.
  const KEY_STORE = "mmsearch.apiKey";
  const auth = { key: window.sessionStorage.getItem(KEY_STORE) || "", needed: false };

  function apiHeaders(extra) {
    const headers = { Accept: "application/json", ...(extra || {}) };
    if (auth.key) headers["X-API-Key"] = auth.key;
    return headers;
  }

  // A 401 or 403: say why and offer the key form.
  function askForKey(message) {
    auth.needed = true;
    els.keyForm.hidden = false;
    showBanner(message, "error");
    els.apiKey.focus();
  }
  // notice: a message to keep above the next results (e.g. an unknown scene in a shared URL).
  // filters: the URL's filter values ("field:value"); similar: the item id of a "more like this" search
  // (its name in similarLabel when known); pageToken: the page shown (empty: the first).
  // sort: "", FIELD or -FIELD; collapse: the request's value ("": the scene's own, "-": none, or a field).
  const state = {
    scenes: [], scene: null, timer: null, controller: null, seq: 0, typingPushed: false, notice: null,
    filters: [], similar: null, similarLabel: null, pageToken: "", nextToken: "", sort: "", collapse: "",
  };

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  function showBanner(message, kind) {
    els.banner.textContent = message;
    els.banner.className = "banner" + (kind === "error" ? " error" : "");
    els.banner.dataset.kind = kind;
    els.banner.hidden = false;
  }

  function flushNotice() {
    if (state.notice) { showBanner(state.notice, "error"); state.notice = null; }
  }

  function hideBanner() { els.banner.hidden = true; els.banner.textContent = ""; delete els.banner.dataset.kind; }

  function sceneInfo(name) { return state.scenes.find((s) => s.name === name) || null; }

  // ---- URL <-> state -------------------------------------------------------
  function readUrl() {
    const params = new URLSearchParams(window.location.search);
    return {
      scene: params.get("scene"), q: params.get("q") || "", k: params.get("k"), filters: params.getAll("filter"),
      similar: params.get("similar"), pageToken: params.get("page_token") || "",
      sort: params.get("sort") || "", collapse: params.get("collapse") || "",
    };
  }

  function writeUrl(mode) {
    if (mode === "none") return;
    const params = new URLSearchParams();
    if (state.scene) params.set("scene", state.scene);
    if (state.similar) params.set("similar", state.similar);
    else if (els.q.value.trim()) params.set("q", els.q.value.trim());
    if (els.k.value !== "10") params.set("k", els.k.value);
    for (const f of state.filters) params.append("filter", f);
    if (state.sort) params.set("sort", state.sort);
    if (state.collapse) params.set("collapse", state.collapse);
    if (state.pageToken) params.set("page_token", state.pageToken);
    const url = window.location.pathname + (params.toString() ? "?" + params.toString() : "");
    if (url === window.location.pathname + window.location.search) return;
    if (mode === "push") window.history.pushState(null, "", url);
    else window.history.replaceState(null, "", url);
  }

  // ---- scenes --------------------------------------------------------------
  const MODALITY = { text: "text → text", image: "text → image" };

  function renderScenes() {
    clear(els.scenes);
    for (const scene of state.scenes) {
      const button = el("button", "scene", scene.name);
      button.type = "button";
      button.setAttribute("role", "tab");
      button.dataset.scene = scene.name;
      button.setAttribute("aria-selected", String(scene.name === state.scene));
      button.appendChild(el("small", null, MODALITY[scene.modality] || scene.modality));
      button.addEventListener("click", () => {
        state.typingPushed = false;
        if (scene.name !== state.scene) {
          state.filters = []; state.sort = ""; state.collapse = ""; leaveSimilar(); firstPage();
        }
        selectScene(scene.name, "push");
      });
      els.scenes.appendChild(button);
    }
  }

  function selectScene(name, historyMode) {
    if (!sceneInfo(name)) return;
    state.scene = name;
    for (const button of els.scenes.querySelectorAll(".scene")) {
      button.setAttribute("aria-selected", String(button.dataset.scene === name));
    }
    const info = sceneInfo(name);
    els.upload.hidden = !info.image_query;
    els.q.placeholder = info.modality === "image" ? "Describe an image…" : "Ask a question…";
    els.sceneNote.textContent = info.note || "";  // the scene's note (e.g. an untrained tower): text, never HTML
    els.sceneNote.hidden = !info.note;
    renderArrangement(info);
    announce("mmsearch:scene", { scene: info });
    if (els.q.value.trim() || state.similar) runSearch(historyMode);
    else { clearResults(); writeUrl(historyMode); }
  }

  // ---- sort and collapse ---------------------------------------------------
  // Sort: the score order, or a number field ascending / descending. Collapse: one result per value of a
  // keyword field; a scene of video frames collapses by video unless the request says collapse=- (the
  // scene's "collapse" in /api/scenes), so the URL carries collapse only when it differs from the scene's.
  function option(select, value, text) {
    const node = el("option", null, text);
    node.value = value;
    select.appendChild(node);
  }

  function renderArrangement(info) {
    const fields = info.fields || [];
    clear(els.sort);
    option(els.sort, "", "by score");
    for (const f of fields.filter((x) => x.type === "number")) {
      option(els.sort, f.name, f.name + " ↑");
      option(els.sort, "-" + f.name, f.name + " ↓");
    }
    els.sort.hidden = els.sort.options.length === 1;
    clear(els.collapse);
    option(els.collapse, "-", "every result");
    for (const f of fields.filter((x) => x.type === "keyword")) option(els.collapse, f.name, "one per " + f.name);
    els.collapse.hidden = els.collapse.options.length === 1;
    showArrangement();
  }

  // The selects show the state (an unknown value from a shared URL: serving names what is wrong).
  function showArrangement() {
    const info = sceneInfo(state.scene);
    els.sort.value = state.sort;
    els.collapse.value = state.collapse || (info && info.collapse) || "-";
  }

  function setArrangement() {
    const info = sceneInfo(state.scene);
    const fallback = (info && info.collapse) || "-";
    state.sort = els.sort.value;
    state.collapse = els.collapse.value === fallback ? "" : els.collapse.value;
    firstPage();
    state.typingPushed = false;
    runSearch("push");
  }

  // A fresh search (new query, scene, size or filters) starts from the first page.
  function firstPage() { state.pageToken = ""; }

  function leaveSimilar() { state.similar = null; state.similarLabel = null; }

  async function loadScenes() {
    try {
      const response = await fetch("/api/scenes", { headers: apiHeaders() });
      const body = await response.json().catch(() => ({}));
      if (response.status === 401 || response.status === 403) {
        askForKey("This search needs an API key: " + errorText(body, response));
        return false;
      }
      if (!response.ok) throw new Error(errorText(body, response));
      state.scenes = body.scenes || [];
    } catch (err) {
      showBanner("Cannot load the scenes: " + err.message, "error");
      return false;
    }
    if (!state.scenes.length) { showBanner("The search back end has no scenes loaded.", "error"); return false; }
    return true;
  }

  // ---- searching -----------------------------------------------------------
  function errorText(body, response) {
    if (body && body.error && body.error.message) return body.error.message;
    return "HTTP " + response.status + " " + response.statusText;
  }

  function clearResults() {
    clear(els.results);
    els.results.className = "results";
    els.meta.hidden = true;
    els.preview.hidden = true;
    els.filters.hidden = true;
    els.pager.hidden = true;
    hideBanner();
    flushNotice();
  }

  function hideResults() {
    clear(els.results);
    els.meta.hidden = true;
    els.filters.hidden = true;
    els.pager.hidden = true;
  }

  async function request(url, init, label) {
    if (state.controller) state.controller.abort();
    const controller = new AbortController();
    state.controller = controller;
    const seq = ++state.seq;
    document.body.setAttribute("aria-busy", "true");
    try {
      const response = await fetch(url, { ...init, signal: controller.signal, headers: apiHeaders() });
      const body = await response.json().catch(() => ({}));
      if (seq !== state.seq) return;
      if (!response.ok) {
        const error = (body && body.error) || {};
        if (error.parameter === "page_token" && state.pageToken) {
          // A page of an index version that was replaced (or a token cut in copying): start again.
          state.notice = error.code === "failed_precondition"
            ? "The index changed since that page was shared; showing the first page of the current one."
            : "That page link is not valid any more; showing the first page.";
          firstPage();
          runSearch("replace");
          return;
        }
        hideResults();
        if (response.status === 401 || response.status === 403) {
          askForKey("Search needs an API key that allows it: " + errorText(body, response));
          return;
        }
        showBanner("Search failed: " + errorText(body, response), "error");
        return;
      }
      render(body, label, init.method !== "POST");  // an uploaded image is not sent again for a next page
    } catch (err) {
      if (err.name === "AbortError" || seq !== state.seq) return;
      hideResults();
      showBanner("Search failed: the web service cannot be reached (" + err.message + ")", "error");
    } finally {
      if (seq === state.seq) document.body.removeAttribute("aria-busy");
    }
  }

  function searchParams() {
    const params = new URLSearchParams({ scene: state.scene, k: els.k.value });
    for (const f of state.filters) params.append("filter", f);
    const info = sceneInfo(state.scene);
    for (const field of (info && info.fields) || []) if (field.facet) params.append("facet", field.name);
    if (state.sort) params.set("sort", state.sort);
    if (state.collapse) params.set("collapse", state.collapse);
    if (state.pageToken) params.set("page_token", state.pageToken);
    return params;
  }

  function runSearch(historyMode) {
    window.clearTimeout(state.timer);
    const q = els.q.value.trim();
    writeUrl(historyMode);
    const params = searchParams();
    els.preview.hidden = true;
    if (state.similar) {
      params.set("id", state.similar);
      const label = "items like " + (state.similarLabel ? "“" + state.similarLabel + "”" : "#" + state.similar);
      request("/api/similar?" + params.toString(), { method: "GET" }, label);
      return;
    }
    if (!q) { state.seq++; clearResults(); return; }
    params.set("q", q);
    params.set("highlight", "true");
    request("/api/search?" + params.toString(), { method: "GET" }, "“" + q + "”");
  }

  function showSimilar(item, label) {
    state.similar = String(item.id);
    state.similarLabel = label;
    firstPage();
    els.q.value = "";
    state.typingPushed = false;
    runSearch("push");
    window.scrollTo(0, 0);
  }

  function setFilters(filters) {
    state.filters = filters;
    firstPage();
    state.typingPushed = false;
    runSearch("push");
  }

  function runImageSearch(file) {
    window.clearTimeout(state.timer);
    els.q.value = "";
    leaveSimilar();
    firstPage();
    writeUrl("push");
    clear(els.preview);
    const img = el("img");
    img.alt = "Query image: " + file.name;
    img.src = URL.createObjectURL(file);
    img.addEventListener("load", () => URL.revokeObjectURL(img.src), { once: true });
    els.preview.appendChild(img);
    els.preview.hidden = false;
    const form = new FormData();
    form.append("scene", state.scene);
    form.append("k", els.k.value);
    for (const f of state.filters) form.append("filter", f);
    if (state.sort) form.append("sort", state.sort);
    if (state.collapse) form.append("collapse", state.collapse);
    form.append("image", file, file.name);
    request("/api/search", { method: "POST", body: form }, "image " + file.name);
  }

  // ---- rendering -----------------------------------------------------------
  function score(value) { return typeof value === "number" ? value.toFixed(3) : "–"; }

  function safeImageUrl(value) {
    if (typeof value !== "string" || !value) return null;
    try {
      const url = new URL(value, window.location.href);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch (_) { return null; }
  }

  function renderMeta(body, label) {
    const n = body.items.length;
    const range = body.offset ? " (" + (body.offset + 1) + "–" + (body.offset + n) + ")" : "";
    els.summaryLine.textContent = n + (n === 1 ? " result" : " results") + range + " for " + label
      + " in " + body.scene + (body.arm ? " · arm " + body.arm : "")
      + (typeof body.cutoff === "number" ? " · scores ≥ " + score(body.cutoff) : "");
    clear(els.timings);
    for (const t of body.timings || []) {
      const span = el("span", "timing", t.stage + " " + t.ms.toFixed(1) + " ms");
      span.dataset.stage = t.stage;
      els.timings.appendChild(span);
    }
    if (typeof body.elapsed_ms === "number") {
      els.timings.appendChild(el("span", "timing", "total " + body.elapsed_ms.toFixed(1) + " ms"));
    }
    els.meta.hidden = false;
  }

  function similarButton(item, label) {
    const button = el("button", "similar", "More like this");
    button.type = "button";
    button.setAttribute("aria-label", "More like " + label);
    button.addEventListener("click", () => showSimilar(item, label));
    return button;
  }

  function foundBy(item) {
    const names = (item.found_by || []).map((f) => f.retriever + " #" + f.rank);
    return names.length ? el("span", "found-by", "found by " + names.join(", ")) : null;
  }

  // The text of a summary field with its highlighted spans ([start, end) in code points) as <mark> elements:
  // text nodes only, never HTML.
  function marked(tag, className, item, field, text) {
    const node = el(tag, className);
    const value = String(text);
    const h = (item.highlights || []).find((x) => x.field === field);
    if (!h || !h.spans.length) { node.textContent = value; return node; }
    const points = Array.from(value);
    let at = 0;
    for (const [start, end] of h.spans) {
      if (start < at || end > points.length || end <= start) continue;
      if (start > at) node.appendChild(document.createTextNode(points.slice(at, start).join("")));
      const mark = el("mark", h.kind, points.slice(start, end).join(""));
      node.appendChild(mark);
      at = end;
    }
    if (at < points.length) node.appendChild(document.createTextNode(points.slice(at).join("")));
    return node;
  }

  function card(item, rank) {
    const s = item.summary || {};
    const node = el("article", "card result");
    node.dataset.id = String(item.id);
    const head = el("div", "card-head");
    const title = el("h2");
    title.appendChild(el("span", "rank", rank + "."));
    title.appendChild(s.question !== undefined ? marked("span", "question", item, "question", s.question)
      : el("span", "question", s.name !== undefined ? s.name : "#" + item.id));
    head.appendChild(title);
    head.appendChild(el("span", "score", "score " + score(item.score)));
    node.appendChild(head);
    if (s.answer !== undefined) node.appendChild(marked("p", "answer", item, "answer", s.answer));
    const foot = el("div", "card-foot");
    if (s.category !== undefined && s.category !== "") foot.appendChild(el("span", "chip", s.category));
    const found = foundBy(item);
    if (found) foot.appendChild(found);
    if (item.folded) foot.appendChild(el("span", "folded", "+" + item.folded + " more like it folded"));
    const label = s.question !== undefined ? String(s.question) : (s.name !== undefined ? String(s.name) : "#" + item.id);
    foot.appendChild(similarButton(item, label));
    node.appendChild(foot);
    const others = Object.keys(s).filter((key) => !["question", "answer", "category", "name", "id"].includes(key));
    if (s.question === undefined && s.answer === undefined && others.length) {
      const list = el("dl", "fields");
      for (const key of others) {
        list.appendChild(el("dt", null, key));
        list.appendChild(el("dd", null, typeof s[key] === "object" ? JSON.stringify(s[key]) : s[key]));
      }
      node.appendChild(list);
    }
    return node;
  }

  function tile(item) {
    const s = item.summary || {};
    const node = el("figure", "tile result");
    node.dataset.id = String(item.id);
    const thumb = el("div", "thumb");
    const src = safeImageUrl(s.url);
    const name = s.name !== undefined ? String(s.name) : "#" + item.id;
    if (src) {
      const img = el("img");
      img.loading = "lazy";
      img.alt = name;
      img.src = src;
      img.addEventListener("error", () => { clear(thumb); thumb.textContent = "no preview"; }, { once: true });
      thumb.appendChild(img);
    } else {
      thumb.textContent = "no preview";
    }
    node.appendChild(thumb);
    const caption = el("figcaption");
    const label = el("span", "name", name);
    label.title = name;
    caption.appendChild(label);
    caption.appendChild(el("span", "score", score(item.score)));
    const moment = safeImageUrl(s.moment_url);  // a video frame: link to its moment (video_url#t=S)
    if (moment) {
      const link = el("a", "moment", "▶ " + clock(Number(s.seconds) || 0));
      link.href = moment;
      link.target = "_blank";
      link.rel = "noopener";
      caption.appendChild(link);
    }
    if (item.folded) caption.appendChild(foldedButton(item, s, moment));
    // The text the image carries (captions, OCR): what a text query may have matched, its highlights marked.
    const texts = ["caption", "alt_text", "ocr_text"].filter((f) => typeof s[f] === "string" && s[f].trim());
    if (texts.length) {
      const words = el("span", "words");
      texts.forEach((f, i) => {
        if (i) words.appendChild(document.createTextNode(" · "));
        words.appendChild(marked("span", null, item, f, s[f]));
      });
      words.title = texts.map((f) => s[f]).join(" · ");
      caption.appendChild(words);
    }
    node.appendChild(caption);
    node.appendChild(similarButton(item, name));
    return node;
  }

  // "N more frames" (or "+N more"): the hits collapse folded into this one; it shows them, this value only,
  // every one (collapse=-).
  function foldedButton(item, s, moment) {
    const field = state.collapse && state.collapse !== "-" ? state.collapse
      : (sceneInfo(state.scene) || {}).collapse || "";
    const n = item.folded;
    const text = moment ? n + (n === 1 ? " more frame" : " more frames") : "+" + n + " more";
    const button = el("button", "folded", text);
    button.type = "button";
    const value = s[field];
    if (!field || value === undefined || value === "") { button.disabled = true; return button; }
    button.title = "Show every result with " + field + " " + value;
    button.addEventListener("click", () => {
      state.collapse = "-";
      showArrangement();
      setFilters([...state.filters.filter((g) => !g.startsWith(field + ":")), field + ":" + value]);
    });
    return button;
  }

  function clock(seconds) {
    const whole = Math.floor(seconds);
    return Math.floor(whole / 60) + ":" + String(whole % 60).padStart(2, "0");
  }

  // ---- filters, facets and pages -------------------------------------------
  function filterChip(text, title, onClick, className) {
    const button = el("button", "chip " + className, text);
    button.type = "button";
    button.title = title;
    button.addEventListener("click", onClick);
    return button;
  }

  function renderFilters(body) {
    clear(els.activeFilters);
    clear(els.facets);
    for (const f of state.filters) {
      els.activeFilters.appendChild(filterChip(f.replace(":", ": ") + " ✕", "Remove the filter " + f,
        () => setFilters(state.filters.filter((g) => g !== f)), "remove"));
    }
    for (const facet of body.facets || []) {
      const field = facet.field;
      for (const c of facet.counts) {
        const value = field + ":" + c.value;
        const on = state.filters.includes(value);
        const chip = filterChip((c.value === "" ? "(none)" : c.value) + " (" + c.count + ")",
          (on ? "Remove " : "Only ") + field + " " + c.value + " (" + c.count + " of the first " + facet.candidates
          + " matches)", () => setFilters(on ? state.filters.filter((g) => g !== value)
            : [...state.filters.filter((g) => !g.startsWith(field + ":")), value]), "facet");
        chip.dataset.field = field;
        chip.dataset.value = c.value;
        chip.setAttribute("aria-pressed", String(on));
        els.facets.appendChild(chip);
      }
    }
    els.filters.hidden = !els.activeFilters.firstChild && !els.facets.firstChild;
  }

  function renderPager(body, paged) {
    state.nextToken = paged ? body.next_page_token || "" : "";
    els.pager.hidden = !state.nextToken;
  }

  function render(body, label, paged) {
    trackImpression(body);
    hideBanner();
    flushNotice();
    clear(els.results);
    const info = sceneInfo(body.scene);
    const images = info ? info.modality === "image" : false;
    els.results.className = "results " + (images ? "grid" : "cards");
    renderMeta(body, label);
    renderFilters(body);
    renderPager(body, paged);
    if (!body.items.length) {
      showBanner("Nothing matches " + label + " in " + body.scene + ".", "info");
      return;
    }
    const first = body.offset || 0;
    body.items.forEach((item, i) => els.results.appendChild(images ? tile(item) : card(item, first + i + 1)));
    announce("mmsearch:results", { scene: body.scene, ids: body.items.map((item) => String(item.id)) });
    if (body.missing_summaries) {
      showBanner(body.missing_summaries + " matched documents have no summary in the document store.", "info");
    }
  }

  // ---- feedback: clicks and dwell on results, sent with navigator.sendBeacon --------
  // One click per result and page (serving also counts a repeat once). Dwell: the seconds
  // from a click until the user moves on (another click, new results, or the page hidden).
  const feedback = { token: null, clicked: new Set(), dwell: null };

  function sendFeedback(payload) {
    const body = JSON.stringify(payload);
    // A beacon carries no header: with a key, a keepalive fetch (it outlives the page as well).
    if (!auth.key && navigator.sendBeacon && navigator.sendBeacon("/api/feedback", body)) return;
    fetch("/api/feedback", { method: "POST", body, keepalive: true,
      headers: apiHeaders({ "Content-Type": "text/plain;charset=UTF-8" }) }).catch(() => {});
  }

  function endDwell() {
    const dwell = feedback.dwell;
    if (!dwell) return;
    feedback.dwell = null;
    const seconds = Math.min(86400, Math.max(0.001, (performance.now() - dwell.start) / 1000));
    sendFeedback({ feedback_token: dwell.token, item_id: dwell.id, event: "dwell", dwell_seconds: seconds });
  }

  function trackImpression(body) {
    endDwell();
    feedback.token = body.feedback_token || null;
    feedback.clicked = new Set();
  }

  function onResultClick(event) {
    // "More like this" and "N more frames" search; they do not open the item
    if (event.target.closest("button.similar, button.folded, button.delete")) return;
    const node = event.target.closest(".result");
    if (!node || !feedback.token || feedback.clicked.has(node.dataset.id)) return;
    feedback.clicked.add(node.dataset.id);
    endDwell();
    sendFeedback({ feedback_token: feedback.token, item_id: node.dataset.id, event: "click" });
    feedback.dwell = { token: feedback.token, id: node.dataset.id, start: performance.now() };
  }

  function trackFeedback() {
    els.results.addEventListener("click", onResultClick);
    document.addEventListener("visibilitychange", () => { if (document.visibilityState === "hidden") endDwell(); });
    window.addEventListener("pagehide", endDwell);
  }

  // ---- what writes.js (the add form and delete buttons) uses ----------------------------------------
  // Events on document: mmsearch:scene {scene: its /api/scenes entry}, mmsearch:results {scene, ids} after
  // results are shown, mmsearch:key when the user gives another key.
  function announce(name, detail) { document.dispatchEvent(new CustomEvent(name, { detail })); }

  window.mmsearch = {
    headers: apiHeaders,
    scene: () => sceneInfo(state.scene),
    banner: showBanner,
    errorText,
    // Search again (the results a write changed); with `text` and no query or "more like" shown, search for it.
    refresh(text) {
      if (!els.q.value.trim() && !state.similar && text) els.q.value = text;
      state.typingPushed = false;
      runSearch("replace");
    },
  };

  // ---- wiring --------------------------------------------------------------
  function applyUrl() {
    const { scene, q, k, filters, similar, pageToken, sort, collapse } = readUrl();
    if (k && [...els.k.options].some((o) => o.value === k)) els.k.value = k;
    els.q.value = similar ? "" : q;
    state.filters = filters;
    state.sort = sort;
    state.collapse = collapse;
    if (similar !== state.similar) state.similarLabel = null;
    state.similar = similar;
    state.pageToken = pageToken;
    const name = scene && sceneInfo(scene) ? scene : (state.scene || state.scenes[0].name);
    state.scene = null;
    if (scene && !sceneInfo(scene)) state.notice = "Unknown scene “" + scene + "”; showing " + name + ".";
    selectScene(name, "none");
  }

  els.q.addEventListener("input", () => {
    window.clearTimeout(state.timer);
    leaveSimilar();
    firstPage();
    state.timer = window.setTimeout(() => {
      runSearch(state.typingPushed ? "replace" : "push");
      state.typingPushed = true;
    }, DEBOUNCE_MS);
  });
  els.form.addEventListener("submit", (event) => {
    event.preventDefault();
    state.typingPushed = false;
    if (els.q.value.trim()) leaveSimilar();
    firstPage();
    runSearch("push");
  });
  els.k.addEventListener("change", () => { state.typingPushed = false; firstPage(); runSearch("push"); });
  els.sort.addEventListener("change", setArrangement);
  els.collapse.addEventListener("change", setArrangement);
  els.more.addEventListener("click", () => {
    if (!state.nextToken) return;
    state.pageToken = state.nextToken;
    state.typingPushed = false;
    runSearch("push");
    window.scrollTo(0, 0);
  });
  els.image.addEventListener("change", () => {
    const file = els.image.files && els.image.files[0];
    if (file) runImageSearch(file);
    els.image.value = "";
  });
  els.keyOpen.addEventListener("click", () => { els.keyForm.hidden = false; els.apiKey.focus(); });
  els.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    auth.key = els.apiKey.value.trim();
    if (auth.key) window.sessionStorage.setItem(KEY_STORE, auth.key);
    else window.sessionStorage.removeItem(KEY_STORE);
    els.apiKey.value = "";
    els.keyForm.hidden = true;
    hideBanner();
    announce("mmsearch:key", {});
    if (state.scenes.length && !auth.needed) runSearch("none");
    else start();
  });
  trackFeedback();
  window.addEventListener("popstate", () => { state.typingPushed = false; if (state.scenes.length) applyUrl(); });

  // Until serving answers, retry loading the scenes (the banner says why in the meantime).
  async function start() {
    if (await loadScenes()) {
      auth.needed = false;
      hideBanner();
      renderScenes();
      applyUrl();
    } else if (!auth.needed) {
      window.setTimeout(start, 3000);  // the key form restarts when a key is needed
    }
    document.body.dataset.ready = "true";
  }

  document.addEventListener("DOMContentLoaded", start);
})();
