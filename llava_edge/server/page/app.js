/* The llava-edge captioning page. No framework, no build step, nothing from other hosts: it talks only to
   the server that served it, through the OpenAI Chat Completions route (streamed, with progress events).
   File names and captions are untrusted text: they go into the page with textContent, never as HTML. */
"use strict";

(() => {
  const PRESETS = {
    short: "Write a short caption for this image: one sentence.",
    detailed: "Describe this image in detail.",
    alt: "Write alt text for this image: one or two plain sentences for someone who cannot see it.",
    keywords: "List keywords for this image, separated by commas.",
  };
  /* Each detail choice as the API takes it: "balanced" (the page's own choice) is High's tiles with 640 of their
     image tokens, chosen for diversity (the image_tokens and token_selection extension fields). */
  const DETAILS = {
    low: {detail: "low", budget: {}},
    auto: {detail: "auto", budget: {}},
    balanced: {detail: "high", budget: {image_tokens: 640, token_selection: "diverse"}},
    high: {detail: "high", budget: {}},
  };
  const MAX_IMAGE_BYTES = 20 * 1024 * 1024;
  const KEY_STORE = "llava-edge-api-key";
  const $ = (id) => document.getElementById(id);

  const state = {
    key: sessionStorage.getItem(KEY_STORE) || "",
    model: "",
    items: [],
    queue: Promise.resolve(),
    ready: null,
    keyPrompt: null,
    nextId: 1,
  };

  class HttpError extends Error {
    constructor(status, message, code = "") {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  const IMAGE_ADVICE = "Check that the file opens in an image viewer, or export it again as JPEG or PNG and add that.";
  const ADVICE = {invalidInputsImage: IMAGE_ADVICE, unsupportedImageFormat: IMAGE_ADVICE};

  // ---- the server -------------------------------------------------------------------------------

  function headers(json) {
    const result = {};
    if (json) result["Content-Type"] = "application/json";
    if (state.key) result.Authorization = `Bearer ${state.key}`;
    return result;
  }

  /* fetch on this server with the key; a 401 asks for the key (kept for this tab) and tries again. */
  async function request(path, options = {}) {
    for (;;) {
      const response = await fetch(path, {...options, headers: headers(options.body !== undefined),
        credentials: "same-origin", cache: "no-store"});
      if (response.status !== 401) return response;
      const reason = state.key ? "That key was refused: enter the key the server was started with (--api-key)."
        : await errorMessage(response);
      await askForKey(reason);
    }
  }

  async function errorMessage(response) {
    return (await failure(response)).message;
  }

  /* The error a response carries, in OpenAI's, Ollama's or Runware's shape. */
  async function failure(response) {
    let message = `The server answered with status ${response.status}.`;
    let code = "";
    try {
      const body = await response.json();
      const error = body.error || (Array.isArray(body.errors) && body.errors[0]) || {};
      if (typeof error === "string") message = error;
      else if (typeof error.message === "string") [message, code] = [error.message, String(error.code || "")];
    } catch (notJson) {
      /* keep the status line */
    }
    return new HttpError(response.status, message, code);
  }

  function askForKey(reason) {
    if (!state.keyPrompt) {
      state.keyPrompt = new Promise((resolve, reject) => {
        const dialog = $("key-dialog");
        $("key-reason").textContent = `${reason} The key is kept in this tab only.`;
        $("key-input").value = "";
        dialog.addEventListener("close", () => {
          state.keyPrompt = null;
          const key = $("key-input").value.trim();
          if (dialog.returnValue === "ok" && key) {
            state.key = key;
            sessionStorage.setItem(KEY_STORE, key);
            resolve();
          } else {
            reject(new HttpError(401, "No API key was given: press Try again and enter the server's key."));
          }
        }, {once: true});
        dialog.returnValue = "";
        dialog.showModal();
      });
    }
    return state.keyPrompt;
  }

  /* Server-sent events of a fetch response: onEvent(kind, data) for each, until `data: [DONE]`. */
  async function readStream(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, {stream: true}).replace(/\r/g, "");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let kind = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) kind = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (!data.length) continue;
        if (data.join("\n") === "[DONE]") return;
        onEvent(kind, JSON.parse(data.join("\n")));
      }
    }
  }

  /* The installed models, one entry each; null (and the header says why) when they cannot be listed. */
  async function listModels() {
    try {
      const response = await request("/v1/models");
      if (!response.ok) throw new HttpError(response.status, await errorMessage(response));
      const data = (await response.json()).data || [];
      return data.filter((entry) => entry && typeof entry === "object" && typeof entry.id === "string");
    } catch (error) {
      $("server-line").textContent = `Could not list the models: ${describe(error)}`;
      return null;
    }
  }

  async function loadModels() {
    const models = await listModels();
    if (models === null) return;
    const resident = models.find((entry) => entry.resident === true);
    state.model = (resident || models[0] || {id: "llava"}).id;
    if (models.length > 1) {
      const select = $("model");
      for (const entry of models) {
        const option = document.createElement("option");
        option.value = entry.id;
        select.append(option);
      }
      select.value = state.model;
      select.addEventListener("change", () => { state.model = select.value; });
      $("model-field").hidden = false;
    }
    showResident(models);
  }

  /* The header and the model choices say which model is loaded now (a request may have swapped another in). */
  function showResident(models) {
    const resident = models.find((entry) => entry.resident === true) || models[0] || {id: state.model};
    $("server-line").textContent = `Model ${resident.id}, running on this machine: the images never leave it.`;
    for (const option of $("model").options) {
      option.textContent = option.value === resident.id ? `${option.value} (loaded)` : option.value;
    }
  }

  async function followResident() {
    const models = await listModels();
    if (models !== null) showResident(models);
  }

  // ---- images and their turns ----------------------------------------------------------------

  function currentPrompt() {
    return $("prompt").value.trim() || PRESETS.detailed;
  }

  function currentDetail() {
    const checked = document.querySelector("input[name=detail]:checked");
    return checked && checked.value in DETAILS ? checked.value : "auto";
  }

  function addFiles(files) {
    for (const file of files) {
      const item = makeItem(file);
      state.items.push(item);
      if (file.size > MAX_IMAGE_BYTES) {
        showError(item, `This file is ${(file.size / 1048576).toFixed(1)} MB; the server takes images up to 20 MB. `
          + "Export a smaller copy (a JPEG, for example) and add that.");
        setStage(item, "Not sent");
        updateButtons(item);
        continue;
      }
      ask(item, currentPrompt());
    }
  }

  function makeItem(file) {
    const node = $("card-template").content.firstElementChild.cloneNode(true);
    const id = state.nextId++;
    const find = (selector) => node.querySelector(selector);
    const item = {
      id, file, node, name: file.name, detail: currentDetail(), turns: [], dataUri: null, controller: null,
      retryable: true,
      el: {stage: find(".stage"), bar: find(".bar"), error: find(".error"), thread: find(".thread"),
        stop: find(".stop"), retry: find(".retry"), copy: find(".copy"), xmp: find(".xmp"),
        follow: find(".follow"), followInput: find(".follow-input")},
    };
    node.dataset.item = String(id);
    find(".name").textContent = file.name;
    find(".name").id = `name-${id}`;
    node.setAttribute("aria-labelledby", `name-${id}`);
    for (const button of node.querySelectorAll(".actions button")) button.setAttribute("aria-describedby", `name-${id}`);
    const thumb = find(".thumb");
    thumb.addEventListener("error", () => { thumb.hidden = true; }, {once: true});  // HEIC, AVIF: no preview
    thumb.src = URL.createObjectURL(file);
    const label = find(".follow-label");
    label.htmlFor = item.el.followInput.id = `follow-${id}`;
    item.el.stop.addEventListener("click", () => stop(item));
    item.el.retry.addEventListener("click", () => retry(item));
    item.el.copy.addEventListener("click", () => copy(item));
    item.el.xmp.addEventListener("click", () => downloadXmp(item));
    item.el.follow.addEventListener("submit", (event) => {
      event.preventDefault();
      const question = item.el.followInput.value.trim();
      if (!question) return;
      item.el.followInput.value = "";
      ask(item, question);
    });
    $("results").append(node);
    $("empty").hidden = true;
    return item;
  }

  function ask(item, question) {
    const node = $("turn-template").content.firstElementChild.cloneNode(true);
    const turn = {question, prompt: question, answer: "", status: "queued", model: "", answeredBy: "",
      detail: item.detail,
      firstTokenS: null, totalS: null, usage: null, finishReason: null,
      el: {node, answer: node.querySelector(".answer"), meta: node.querySelector(".meta")}};
    node.querySelector(".question").textContent = question;
    item.turns.push(turn);
    item.el.thread.append(node);
    enqueue(item, turn);
  }

  function enqueue(item, turn) {
    turn.status = "queued";
    setStage(item, "Waiting for its turn");
    updateButtons(item);
    state.queue = state.queue.then(() => runTurn(item, turn), () => runTurn(item, turn));
  }

  /* The messages for a turn: the image with the first question, then every answered turn, then this one. */
  function conversation(item, turn) {
    const asked = item.turns.filter((other) => other === turn || other.status === "done");
    const messages = [];
    asked.forEach((other, index) => {
      const content = index > 0 ? other.prompt : [{type: "text", text: other.prompt},
        {type: "image_url", image_url: {url: item.dataUri, detail: DETAILS[item.detail].detail}}];
      messages.push({role: "user", content});
      if (other !== turn) messages.push({role: "assistant", content: other.answer});
    });
    return messages;
  }

  async function runTurn(item, turn) {
    if (turn.status !== "queued") return;
    turn.status = "running";
    item.controller = new AbortController();
    item.progress = {};
    item.retryable = true;
    showError(item, "");
    turn.answer = "";
    turn.answeredBy = "";
    turn.el.answer.textContent = "";
    turn.el.answer.setAttribute("aria-busy", "true");
    updateButtons(item);
    try {
      setStage(item, "Reading the file");
      await state.ready;
      if (!item.dataUri) item.dataUri = await readAsDataUri(item.file);
      turn.model = state.model;
      const body = {model: turn.model, messages: conversation(item, turn), stream: true,
        stream_options: {include_usage: true, include_progress: true}, ...DETAILS[item.detail].budget};
      setStage(item, "Sending");
      const started = performance.now();
      const response = await request("/v1/chat/completions",
        {method: "POST", body: JSON.stringify(body), signal: item.controller.signal});
      if (!response.ok) throw await failure(response);
      setStage(item, "Waiting for the model");
      await readStream(response, (kind, data) => onEvent(item, turn, kind, data, started));
      if (!turn.finishReason) throw new HttpError(0, "The answer stopped early. Press Try again.");
      turn.totalS = (performance.now() - started) / 1000;
      finishTurn(item, turn);
      await followResident();
    } catch (error) {
      if (error.name === "AbortError") {
        turn.status = "stopped";
        setStage(item, "Stopped");
      } else {
        turn.status = "failed";
        item.retryable = !(error instanceof HttpError && [400, 404, 413].includes(error.status));
        setStage(item, "Failed");
        showError(item, describe(error));
      }
    } finally {
      item.controller.abort();  // ends the request should it still be open (an error inside the stream)
      item.controller = null;
      item.el.bar.hidden = true;
      turn.el.answer.removeAttribute("aria-busy");
      updateButtons(item);
    }
  }

  function onEvent(item, turn, kind, data, started) {
    if (kind === "progress") {
      showProgress(item, data);
      return;
    }
    if (data.error) throw new HttpError(500, data.error.message || "The caption failed.", data.error.code || "");
    if (data.usage) turn.usage = data.usage;
    if (data.model) turn.answeredBy = data.model;
    const choice = data.choices && data.choices[0];
    if (!choice) return;
    const piece = choice.delta && choice.delta.content;
    if (piece) {
      if (turn.firstTokenS === null) {
        turn.firstTokenS = (performance.now() - started) / 1000;
        item.el.bar.hidden = true;
        setStage(item, "Generating");
      }
      turn.answer += piece;
      turn.el.answer.textContent = turn.answer;
    }
    if (choice.finish_reason) turn.finishReason = choice.finish_reason;
  }

  function showProgress(item, progress) {
    const bar = item.el.bar;
    const seen = item.progress;
    seen[progress.stage] = progress;
    if (progress.stage === "load") {
      bar.hidden = false;
      bar.value = progress.total ? progress.done / progress.total : 0;
      setStage(item, `Loading the model ${state.model} ${eta(progress.eta_s)}`.trim());
      return;
    }
    const parts = [];
    if (seen.encode && seen.encode.total) parts.push(`Tile ${seen.encode.done} of ${seen.encode.total} encoded`);
    if (seen.prefill) {
      parts.push(`prefill ${seen.prefill.done.toLocaleString()} of ${seen.prefill.total.toLocaleString()} tokens`);
      bar.hidden = false;
      bar.value = seen.prefill.total ? seen.prefill.done / seen.prefill.total : 0;
    }
    const left = remaining(seen.encode, seen.prefill);
    setStage(item, `${parts.join(" · ")}${left === null ? "" : ` · ${eta(left)}`}`);
  }

  function remaining(...stages) {
    let total = 0;
    for (const stage of stages) {
      if (!stage || stage.done >= stage.total) continue;
      if (stage.eta_s === null || stage.eta_s === undefined) return null;
      total += stage.eta_s;
    }
    return total;
  }

  function eta(seconds) {
    if (seconds === null || seconds === undefined) return "";
    const whole = Math.max(0, Math.round(seconds));
    return `about ${Math.floor(whole / 60)}:${String(whole % 60).padStart(2, "0")} left`;
  }

  function finishTurn(item, turn) {
    turn.status = "done";
    const tokens = turn.usage ? ` · ${turn.usage.completion_tokens} tokens` : "";
    const first = turn.firstTokenS === null ? "" : `first token ${turn.firstTokenS.toFixed(2)} s · `;
    const model = turn.answeredBy || turn.model;
    turn.el.meta.textContent = `${model} · ${first}${turn.totalS.toFixed(2)} s in all${tokens}`;
    turn.el.node.dataset.model = model;
    setStage(item, turn.finishReason === "length" ? "Done (cut at the token limit)" : "Done");
    $("announce").textContent = `Answer ready for ${item.name}.`;
  }

  function stop(item) {
    for (const turn of item.turns) {
      if (turn.status === "queued") turn.status = "stopped";
    }
    if (item.controller) item.controller.abort();
    else setStage(item, "Stopped");
    updateButtons(item);
  }

  function retry(item) {
    const turn = item.turns.find((each) => each.status === "failed" || each.status === "stopped");
    if (turn) enqueue(item, turn);
  }

  function updateButtons(item) {
    const busy = item.turns.some((turn) => turn.status === "queued" || turn.status === "running");
    const answered = item.turns.some((turn) => turn.status === "done");
    const failed = item.turns.some((turn) => turn.status === "failed" || turn.status === "stopped");
    item.el.stop.hidden = !busy;
    item.el.retry.hidden = busy || !failed || !item.retryable;
    item.el.copy.disabled = item.el.xmp.disabled = !answered;
    item.el.follow.hidden = !answered;
    item.node.classList.toggle("busy", busy);
    const anyAnswer = state.items.some((each) => each.turns.some((turn) => turn.status === "done"));
    $("download-jsonl").disabled = $("download-csv").disabled = !anyAnswer;
  }

  function setStage(item, text) {
    item.el.stage.textContent = text;
  }

  function showError(item, text) {
    item.el.error.textContent = text;
    item.el.error.hidden = !text;
    item.node.classList.toggle("failed", Boolean(text));
  }

  function describe(error) {
    if (error instanceof HttpError) {
      if (ADVICE[error.code]) return `${error.message} ${ADVICE[error.code]}`;
      if (error.status === 413) return `${error.message} Make the image smaller and add it again.`;
      if (error.status === 503 || error.status === 429) return `${error.message} Then press Try again.`;
      return error.message;
    }
    if (error instanceof TypeError) {
      return "Could not reach the server. Check that llava-edge serve is still running, then press Try again.";
    }
    return String(error && error.message ? error.message : error);
  }

  function readAsDataUri(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(String(reader.result));
      reader.onerror = () => reject(new HttpError(0, "The browser could not read this file. Add it again."));
      reader.readAsDataURL(file);
    });
  }

  // ---- taking results away ---------------------------------------------------------------------

  function latestAnswer(item) {
    return [...item.turns].reverse().find((turn) => turn.status === "done");
  }

  async function copy(item) {
    const turn = latestAnswer(item);
    if (!turn) return;
    try {
      await navigator.clipboard.writeText(turn.answer);
    } catch (noClipboard) {  // plain http on a LAN address: no clipboard API, select and copy instead
      const area = document.createElement("textarea");
      area.value = turn.answer;
      document.body.append(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
    $("announce").textContent = "Caption copied.";
    item.el.copy.textContent = "Copied";
    setTimeout(() => { item.el.copy.textContent = "Copy caption"; }, 1500);
  }

  async function downloadXmp(item) {
    const turn = latestAnswer(item);
    if (!turn) return;
    try {
      const body = {caption: turn.answer, prompt: turn.prompt, model: turn.model, image: item.dataUri,
        keywords: turn.prompt === PRESETS.keywords};
      const response = await request("/page/xmp", {method: "POST", body: JSON.stringify(body)});
      if (!response.ok) throw await failure(response);
      save(await response.blob(), `${item.name}.xmp`);
    } catch (error) {
      showError(item, describe(error));
    }
  }

  function rows() {
    const result = [];
    for (const item of state.items) {
      item.turns.forEach((turn, index) => {
        if (turn.status !== "done") return;
        result.push({file_name: item.name, turn: index + 1, prompt: turn.prompt, caption: turn.answer,
          model: turn.model, detail: turn.detail, first_token_s: round(turn.firstTokenS),
          total_s: round(turn.totalS), prompt_tokens: turn.usage ? turn.usage.prompt_tokens : null,
          completion_tokens: turn.usage ? turn.usage.completion_tokens : null, finish_reason: turn.finishReason});
      });
    }
    return result;
  }

  function round(seconds) {
    return seconds === null ? null : Math.round(seconds * 1000) / 1000;
  }

  // The batch CSV's rule (CsvWriter): a text cell a spreadsheet could run as a formula (= + - @, a tab or a carriage
  // return first) gets a ' in front, and so does one that begins with '; drop one leading ' to get the value back.
  // Numbers are written as they are.
  const FORMULA_START = /^[=+\-@\t\r']/;

  function csvCell(value) {
    let text = value === null || value === undefined ? "" : String(value);
    if (typeof value === "string" && FORMULA_START.test(text)) text = `'${text}`;
    return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
  }

  function downloadJsonl() {
    const text = rows().map((row) => JSON.stringify(row)).join("\n");
    save(new Blob([`${text}\n`], {type: "application/x-ndjson"}), "captions.jsonl");
  }

  function downloadCsv() {
    const all = rows();
    const columns = Object.keys(all[0] || {file_name: ""});
    const lines = [columns.join(","), ...all.map((row) => columns.map((name) => csvCell(row[name])).join(","))];
    save(new Blob([`${lines.join("\r\n")}\r\n`], {type: "text/csv"}), "captions.csv");
  }

  function save(blob, name) {
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = name;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  }

  // ---- wiring ----------------------------------------------------------------------------------

  function initPrompt() {
    const preset = $("preset");
    const prompt = $("prompt");
    prompt.value = PRESETS[preset.value];
    preset.addEventListener("change", () => {
      if (preset.value in PRESETS) prompt.value = PRESETS[preset.value];
      else prompt.focus();
    });
    prompt.addEventListener("input", () => {
      preset.value = Object.keys(PRESETS).find((name) => PRESETS[name] === prompt.value.trim()) || "custom";
    });
  }

  function initFiles() {
    const input = $("files");
    const drop = $("drop");
    input.addEventListener("change", () => {
      addFiles([...input.files]);
      input.value = "";
    });
    document.addEventListener("dragover", (event) => {
      event.preventDefault();
      drop.classList.add("dragging");
    });
    document.addEventListener("dragleave", (event) => {
      if (!event.relatedTarget) drop.classList.remove("dragging");
    });
    document.addEventListener("drop", (event) => {
      event.preventDefault();
      drop.classList.remove("dragging");
      const files = [...(event.dataTransfer ? event.dataTransfer.files : [])];
      if (files.length) addFiles(files);
    });
  }

  function init() {
    $("settings").addEventListener("submit", (event) => event.preventDefault());
    $("download-jsonl").addEventListener("click", downloadJsonl);
    $("download-csv").addEventListener("click", downloadCsv);
    initPrompt();
    initFiles();
    state.ready = loadModels();
  }

  init();
})();
