// onlymine page: upload photos, follow the job, show the verification, download the results. No build step.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const POLL_MS = 700;
let config = null;

function showError(message) {
  const el = $("#error");
  el.textContent = message;
  el.hidden = !message;
}

function fmtBytes(n) {
  return n >= 1048576 ? `${(n / 1048576).toFixed(0)} MB` : `${(n / 1024).toFixed(0)} KB`;
}

async function loadConfig() {
  const res = await fetch("/api/config");
  config = await res.json();
  const model = $("#model");
  for (const spec of config.authorized) model.append(new Option(spec, spec));
  const preset = $("#preset");
  for (const [name, p] of Object.entries(config.presets)) {
    const opt = new Option(`${name} (eps ${p.eps_255}/255, ${p.steps} steps)`, name);
    opt.selected = name === config.default_preset;
    preset.append(opt);
  }
  const l = config.limits;
  $("#limits").textContent = `Up to ${l.max_files} photos, ${fmtBytes(l.max_upload_bytes)} and ` +
    `${(l.max_pixels / 1e6).toFixed(0)} megapixels each. Checked by: ${config.unauthorized.join(", ")}. ` +
    `Results are deleted after ${Math.round(l.result_ttl_s / 60)} minutes.`;
}

function setFiles(files) {
  const n = files.length;
  $("#drop-text").textContent = n ? `${n} photo${n > 1 ? "s" : ""} selected: ` +
    Array.from(files, (f) => f.name).join(", ") : "Drop photos here or click to choose";
  $("#submit").disabled = n === 0;
}

function setupDrop() {
  const drop = $("#drop");
  const input = $("#files");
  input.addEventListener("change", () => setFiles(input.files));
  for (const ev of ["dragenter", "dragover"]) {
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const ev of ["dragleave", "drop"]) {
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (e) => {
    input.files = e.dataTransfer.files;
    setFiles(input.files);
  });
}

async function submit(event) {
  event.preventDefault();
  showError("");
  const files = $("#files").files;
  if (!files.length) return;
  const body = new FormData();
  for (const f of files) body.append("files", f, f.name);
  body.append("model", $("#model").value);
  body.append("preset", $("#preset").value);
  $("#submit").disabled = true;
  $("#results").replaceChildren();
  $("#zip").hidden = true;
  try {
    const res = await fetch("/api/jobs", { method: "POST", body });
    const data = await res.json().catch(() => ({ detail: `HTTP ${res.status}` }));
    if (!res.ok) throw new Error(data.detail || `HTTP ${res.status}`);
    $("#job").hidden = false;
    await follow(data.status_url);
  } catch (err) {
    showError(String(err.message || err));
  } finally {
    $("#submit").disabled = $("#files").files.length === 0;
  }
}

async function follow(url) {
  for (;;) {
    const res = await fetch(url, { cache: "no-store" });
    const job = await res.json();
    if (!res.ok) throw new Error(job.detail || `HTTP ${res.status}`);
    render(job);
    if (job.state === "done" || job.state === "failed") return job;
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

function render(job) {
  const { done, total } = job.progress;
  $("#progress").max = total;
  $("#progress").value = done;
  const words = { queued: "waiting for a worker", running: "protecting", done: "done", failed: "failed" };
  $("#state").textContent = `${words[job.state] || job.state}: ${done} of ${total} photo(s)` +
    (job.message ? ` (${job.message})` : "");
  for (const img of job.images) {
    if (["ok", "failed", "error"].includes(img.status)) renderImage(img);
  }
  if (job.zip_url) {
    const zip = $("#zip");
    zip.href = job.zip_url;
    zip.hidden = false;
  }
}

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
}

function predText(p) {
  const conf = p.confidence == null ? "" : ` ${(100 * p.confidence).toFixed(0)}%`;
  return `${p.label || "class " + p.class}${conf}`;
}

function renderImage(img) {
  const id = `result-${img.index}`;
  if (document.getElementById(id)) return;
  const node = $("#result-template").content.firstElementChild.cloneNode(true);
  node.id = id;
  node.dataset.status = img.status;
  $(".name", node).textContent = img.name;
  const status = $(".status", node);
  status.className = `status ${img.status}`;
  const words = { ok: "Protected and verified.", failed: "Protected, but the authorized prediction was not kept." };
  status.textContent = img.message || words[img.status] || img.status;
  if (img.status === "error") {
    for (const sel of [".images", ".verdicts", ".download"]) $(sel, node).remove();
    $("#results").append(node);
    return;
  }
  $(".before", node).src = img.before_url;
  $(".after", node).src = img.protected_url;
  $(".diff", node).src = img.diff_url;
  const body = $(".verdicts tbody", node);
  const rows = [[img.authorized, "authorized"], ...img.unauthorized.map((u) => [u, "unauthorized"])];
  for (const [v, role] of rows) {
    const row = body.insertRow();
    cell(row, v.model);
    cell(row, role);
    cell(row, predText(v.before));
    cell(row, predText(v.after));
    const good = role === "authorized" ? v.kept : !v.kept;
    cell(row, v.kept ? "yes" : "no", good ? "yes" : "no");
    if (role === "authorized" || !v.threats) {
      cell(row, "");
      continue;
    }
    const reads = Object.entries(v.threats).filter(([, k]) => k > 0)
      .map(([t, k]) => (k < 1 ? `${t} (${Math.round(k * 5)}/5)` : t));
    cell(row, reads.length ? reads.join(", ") : `none of ${Object.keys(v.threats).length}`,
      reads.length ? "no" : "yes");
  }
  const q = img.quality;
  $(".quality", node).textContent = `PSNR ${q.psnr == null ? "∞" : q.psnr.toFixed(2)} dB · ` +
    `SSIM ${q.ssim.toFixed(4)} · largest change ${q.linf_255}/255 · ${img.seconds} s`;
  const dl = $(".download", node);
  dl.href = img.protected_url;
  $("#results").append(node);
}

document.addEventListener("DOMContentLoaded", () => {
  setupDrop();
  $("#upload-form").addEventListener("submit", submit);
  loadConfig().catch((err) => showError(`cannot load the server configuration: ${err}`));
});
