// The page of `resnetlab serve`: draw (1-channel models) or drop an image, and show what the model thinks.
"use strict";

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");
const undoStack = [];  // canvas snapshots before each stroke or upload, for Undo
let model = null;
let canDraw = false;
let drawing = false;
let blank = true;
let lastPoint = null;

// One request in flight at a time; input that changes meanwhile is sent when it returns, and a reply to
// older input is dropped. body[data-state] is "idle" once the page shows the latest input's prediction.
let inFlight = false;
let pending = null;
let encoding = 0;  // canvas.toBlob calls not yet returned
let sequence = 0;

function updateState() {
  document.body.dataset.state = inFlight || pending || encoding ? "busy" : "idle";
}

function clearCanvas() {
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  blank = true;
  $("canvas-hint").classList.toggle("hidden", false);
}

function snapshot() {
  undoStack.push({ image: ctx.getImageData(0, 0, canvas.width, canvas.height), blank });
  if (undoStack.length > 50) undoStack.shift();
  $("undo").disabled = false;
}

function showResult(result) {
  const [best] = result.top;
  $("verdict").classList.remove("empty");
  $("verdict").replaceChildren(Object.assign(document.createElement("span"), {
    className: "top-class", textContent: best.class,
  }), Object.assign(document.createElement("small"), {
    textContent: `${(best.probability * 100).toFixed(1)}%`,
  }));
  $("bars").replaceChildren(...result.top.map(({ class: name, probability }) => {
    const row = document.createElement("li");
    const label = Object.assign(document.createElement("span"), { className: "name", textContent: name, title: name });
    const track = Object.assign(document.createElement("span"), { className: "track" });
    const fill = Object.assign(document.createElement("span"), { className: "fill" });
    fill.style.width = `${(probability * 100).toFixed(1)}%`;
    track.append(fill);
    const value = Object.assign(document.createElement("span"), {
      className: "value", textContent: `${(probability * 100).toFixed(1)}%`,
    });
    row.append(label, track, value);
    return row;
  }));
  if (result.input_png) $("seen").src = result.input_png;
  if (result.gradcam_png) $("gradcam").src = result.gradcam_png;
  $("timing").textContent = `${result.model}: ${result.milliseconds.toFixed(1)} ms on the server`;
}

function showEmpty() {
  $("verdict").textContent = canDraw ? "Draw something, or drop an image." : "Drop an image.";
  $("verdict").classList.add("empty");
  $("bars").replaceChildren();
  $("seen").removeAttribute("src");
  $("gradcam").removeAttribute("src");
  $("timing").textContent = "";
  $("error").hidden = true;
}

async function send(body) {
  if (inFlight) { pending = body; updateState(); return; }
  inFlight = true;
  updateState();
  const mine = ++sequence;
  try {
    const gradcam = model && model.gradcam ? "&gradcam=true" : "";
    const response = await fetch(`predict?top=5&input_png=true${gradcam}`, { method: "POST", body });
    const result = await response.json();
    if (mine !== sequence) return;
    if (!response.ok) throw new Error(result.detail || `HTTP ${response.status}`);
    $("error").hidden = true;
    showResult(result);
  } catch (error) {
    $("error").textContent = String(error.message || error);
    $("error").hidden = false;
  } finally {
    inFlight = false;
    if (pending) { const next = pending; pending = null; send(next); } else updateState();
  }
}

function sendCanvas() {
  if (blank) { sequence++; pending = null; showEmpty(); updateState(); return; }
  encoding++;
  updateState();
  canvas.toBlob((blob) => { encoding--; send(blob); }, "image/png");
}

// Drawing: white on black, like MNIST; the brush is about 2 pixels of a 28x28 input.
function point(event) {
  const box = canvas.getBoundingClientRect();
  return [(event.clientX - box.left) * canvas.width / box.width, (event.clientY - box.top) * canvas.height / box.height];
}

function stroke(from, to) {
  ctx.strokeStyle = "#fff";
  ctx.lineWidth = canvas.width / 12;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.shadowColor = "#fff";
  ctx.shadowBlur = canvas.width / 40;
  ctx.beginPath();
  ctx.moveTo(...from);
  ctx.lineTo(...to);
  ctx.stroke();
  blank = false;
  $("canvas-hint").classList.add("hidden");
}

canvas.addEventListener("pointerdown", (event) => {
  if (!canDraw) return;
  canvas.setPointerCapture(event.pointerId);
  snapshot();
  drawing = true;
  lastPoint = point(event);
  stroke(lastPoint, lastPoint);
  sendCanvas();
});
canvas.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  const next = point(event);
  stroke(lastPoint, next);
  lastPoint = next;
  if (!inFlight) sendCanvas();
});
for (const name of ["pointerup", "pointercancel"]) {
  canvas.addEventListener(name, () => {
    if (!drawing) return;
    drawing = false;
    sendCanvas();
  });
}

$("clear").addEventListener("click", () => {
  if (!blank) snapshot();
  clearCanvas();
  sendCanvas();
});

function undo() {
  const last = undoStack.pop();
  if (!last) return;
  ctx.putImageData(last.image, 0, 0);
  blank = last.blank;
  $("canvas-hint").classList.toggle("hidden", !blank);
  $("undo").disabled = undoStack.length === 0;
  sendCanvas();
}
$("undo").addEventListener("click", undo);
document.addEventListener("keydown", (event) => {
  if ((event.ctrlKey || event.metaKey) && event.key === "z") { event.preventDefault(); undo(); }
});

// Images: the file itself goes to the model (as `resnetlab predict` reads it); the canvas shows it.
async function useFile(file) {
  if (!file) return;
  snapshot();
  send(file);
  try {
    const bitmap = await createImageBitmap(file);
    clearCanvas();
    const scale = Math.min(canvas.width / bitmap.width, canvas.height / bitmap.height);
    const [w, h] = [bitmap.width * scale, bitmap.height * scale];
    ctx.imageSmoothingEnabled = scale < 3;  // a 28x28 image shows its pixels, a photo stays smooth
    ctx.drawImage(bitmap, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
    blank = false;
    $("canvas-hint").classList.add("hidden");
  } catch {
    // Not an image the browser can show; the server's reply says what is wrong with it.
  }
}

$("file").addEventListener("change", (event) => { useFile(event.target.files[0]); event.target.value = ""; });
const zone = $("drop-zone");
zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("dragging"); });
zone.addEventListener("dragleave", (event) => {
  if (!zone.contains(event.relatedTarget)) zone.classList.remove("dragging");
});
zone.addEventListener("drop", (event) => {
  event.preventDefault();
  zone.classList.remove("dragging");
  useFile(event.dataTransfer.files[0]);
});
document.addEventListener("paste", (event) => {
  const item = [...event.clipboardData.items].find((i) => i.type.startsWith("image/"));
  if (item) useFile(item.getAsFile());
});

function percent(value) {
  return value == null ? "not recorded" : `${(value * 100).toFixed(2)}%`;
}

function showModel(info) {
  model = info;
  canDraw = info.in_channels === 1;
  const size = `${info.in_channels === 1 ? "grayscale" : "RGB"} ${info.image_size}x${info.image_size}`;
  const summary = $("model-summary");
  summary.replaceChildren(
    Object.assign(document.createElement("b"), { textContent: info.model }), ` on ${info.dataset}`,
    ` \u00b7 test accuracy ${percent(info.test_accuracy)}`, ` \u00b7 ${info.classes.length} classes`,
  );
  document.title = `${info.model} on ${info.dataset} \u00b7 resnetlab`;
  canvas.classList.toggle("no-draw", !canDraw);
  $("canvas-hint").textContent = canDraw ? "Draw here" : "Drop an image";
  $("input-hint").textContent = canDraw
    ? "Draw white on black with the mouse or a finger, or drop, paste or upload an image."
    : "Drop, paste or upload an image: this model takes color images.";
  $("seen-hint").textContent = `${size}, before normalization.`;
  $("gradcam-block").hidden = !info.gradcam;
  $("clear").disabled = false;
  const facts = [
    ["Model", info.model], ["Dataset", info.dataset], ["Test accuracy", percent(info.test_accuracy)],
    ["Input", size], ["Epoch", info.epoch ?? "-"],
  ];
  $("facts").replaceChildren(...facts.flatMap(([term, value]) => [
    Object.assign(document.createElement("dt"), { textContent: term }),
    Object.assign(document.createElement("dd"), { textContent: String(value) }),
  ]).reduce((groups, element, i) => {
    if (i % 2 === 0) groups.push(document.createElement("div"));
    groups[groups.length - 1].append(element);
    return groups;
  }, []));
  $("classes").replaceChildren(...info.classes.map((name) => Object.assign(document.createElement("span"), {
    textContent: name,
  })));
  $("curl").textContent = `curl -F file=@image.png ${new URL("predict", location.href)}`;
}

clearCanvas();
updateState();
$("undo").disabled = true;
fetch("model")
  .then((response) => response.json())
  .then(showModel)
  .then(showEmpty)
  .catch((error) => { $("model-summary").textContent = `could not load the model description: ${error}`; });
