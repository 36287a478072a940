// podq console: live updates over Server-Sent Events. Pages work without this file; it only
// keeps cells and the job stream current. It never builds HTML: text goes in with textContent.
"use strict";

let leaving = false;  // a form was sent: its answer replaces the page, so no reload of ours
document.addEventListener("submit", () => { leaving = true; });

function liveNumbers(url) {
  const source = new EventSource(url);
  source.onmessage = (event) => {
    const cells = JSON.parse(event.data);
    for (const cell of document.querySelectorAll("[data-k]")) {
      const text = cells[cell.dataset.k];
      if (text !== undefined && cell.textContent !== text) cell.textContent = text;
    }
  };
  return source;
}

function jobStream(list) {
  const source = new EventSource(list.dataset.stream);
  source.onmessage = (event) => {
    const item = document.createElement("li");
    item.dataset.cursor = event.lastEventId;
    item.textContent = JSON.stringify(JSON.parse(event.data).output);
    list.appendChild(item);
  };
  source.addEventListener("status", (event) => {
    // the job ended: show its status at once, then load the page again for its final facts
    // (output, error, timings, buttons), rendered by the server
    source.close();
    const status = document.getElementById("job-status");
    status.textContent = JSON.parse(event.data).status;
    if (!leaving) window.location.reload();
  });
  source.addEventListener("error", (event) => {
    if (event.data) source.close();  // the job is gone; a plain network error reconnects
  });
  return source;
}

function logStream(list) {
  const source = new EventSource(list.dataset.stream);
  source.onmessage = (event) => {
    const line = JSON.parse(event.data);
    const item = document.createElement("li");
    const head = document.createElement("span");
    head.className = "head";
    const time = new Date(line.time).toISOString().slice(11, 23);
    head.textContent = [time, line.worker, line.job.slice(0, 12), line.level || line.stream]
      .filter(Boolean).join(" ");
    item.append(head, " " + line.line);
    list.appendChild(item);
  };
  return source;
}

document.addEventListener("DOMContentLoaded", () => {
  const live = document.body.dataset.live;
  if (live) liveNumbers(live);
  const chunks = document.getElementById("chunks");
  if (chunks && chunks.dataset.stream) jobStream(chunks);
  const logs = document.getElementById("logs");
  if (logs && logs.dataset.stream) logStream(logs);
});
