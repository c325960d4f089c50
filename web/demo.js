// The demo page: draw or pick a digit, encrypt it here, score it on the server, decrypt here.
//
// Only ciphertexts leave the page. #model chooses the linear model, the square network (scored in
// two rounds: the page decrypts the masked hidden values, squares them and sends them back) or both.
// For the browser tests, #result carries the 784 pixels that were encrypted (data-pixels, base64),
// the state of the latest scoring (data-state) and each model's label (data-labels, JSON by model).

import { ScoringClient } from './scoring-client.js';
import { mnistPixels } from './mnist-input.js';

const $ = (id) => document.getElementById(id);
const pad = $('pad');
const ink = pad.getContext('2d');
const apiKey = $('api-key');
const SIDE = 28;
let picked = null; // a bundled digit's pixels, or null when the pad is the input
let clients = {}; // by model name ('': the service's default model), for the API key they were made with
let clientKey = null;
const NETWORK = 'mnist-square';

function clearPad() {
  ink.fillStyle = '#000';
  ink.fillRect(0, 0, pad.width, pad.height);
}

function showPixels(canvas, pixels) {
  const context = canvas.getContext('2d');
  const image = context.createImageData(SIDE, SIDE);
  pixels.forEach((v, i) => image.data.set([v, v, v, 255], 4 * i));
  context.putImageData(image, 0, 0);
}

function selectDigit(button) {
  for (const other of $('digits').children) other.setAttribute('aria-pressed', String(other === button));
}

// Drawing: white round strokes on black, like MNIST's ink.
let drawing = false;
function strokeTo(event) {
  const box = pad.getBoundingClientRect();
  const x = ((event.clientX - box.left) * pad.width) / box.width;
  const y = ((event.clientY - box.top) * pad.height) / box.height;
  if (!drawing) {
    drawing = true;
    ink.beginPath();
    ink.moveTo(x, y);
  }
  ink.lineTo(x, y);
  ink.stroke();
}

pad.addEventListener('pointerdown', (event) => {
  if (picked) clearPad();
  picked = null;
  selectDigit(null);
  pad.setPointerCapture(event.pointerId);
  Object.assign(ink, { strokeStyle: '#fff', lineWidth: 22, lineCap: 'round', lineJoin: 'round' });
  drawing = false;
  strokeTo(event);
});
pad.addEventListener('pointermove', (event) => { if (event.buttons) strokeTo(event); });
pad.addEventListener('pointerup', () => {
  drawing = false;
  const pixels = mnistPixels(ink.getImageData(0, 0, pad.width, pad.height));
  if (pixels) showPixels($('preview'), pixels);
});

$('clear').addEventListener('click', () => {
  picked = null;
  selectDigit(null);
  clearPad();
  showPixels($('preview'), new Uint8Array(SIDE * SIDE));
});

async function loadDigits() {
  const response = await fetch('/demo/digits.bin');
  if (!response.ok) throw new Error(`GET /demo/digits.bin answered ${response.status}`);
  const data = new Uint8Array(await response.arrayBuffer());
  for (let i = 0; i * SIDE * SIDE < data.length; i++) {
    const pixels = data.slice(i * SIDE * SIDE, (i + 1) * SIDE * SIDE);
    const button = document.createElement('button');
    button.type = 'button';
    button.dataset.digit = String(i);
    button.setAttribute('aria-label', `bundled digit ${i}`);
    button.setAttribute('aria-pressed', 'false');
    const thumbnail = document.createElement('canvas');
    thumbnail.width = thumbnail.height = SIDE;
    showPixels(thumbnail, pixels);
    button.append(thumbnail);
    button.addEventListener('click', () => {
      picked = pixels;
      selectDigit(button);
      ink.drawImage(thumbnail, 0, 0, pad.width, pad.height);
      showPixels($('preview'), pixels);
    });
    $('digits').append(button);
  }
}

function buildBars(classes) {
  $('bars').replaceChildren(...classes.map((label) => {
    const item = document.createElement('li');
    const name = document.createElement('span');
    name.textContent = label;
    const track = document.createElement('span');
    track.className = 'track';
    const bar = document.createElement('span');
    bar.className = 'bar';
    track.append(bar);
    const value = document.createElement('span');
    value.className = 'value';
    item.append(name, track, value);
    return item;
  }));
}

function showScores(scores, label) {
  const top = Math.max(...scores);
  const bottom = Math.min(...scores);
  [...$('bars').children].forEach((item, i) => {
    item.classList.toggle('top', scores[i] === top);
    item.querySelector('.bar').style.width = `${(100 * (scores[i] - bottom)) / (top - bottom || 1)}%`;
    item.querySelector('.value').textContent = scores[i].toFixed(2);
  });
  $('label').textContent = label;
}

const ms = (value) => `${value.toFixed(1)} ms`;
const bytesText = (value) => `${value.toLocaleString('en')} B`;

function hexExcerpt(bytes) {
  return `${Array.from(bytes.subarray(0, 112), (b) => b.toString(16).padStart(2, '0')).join(' ')} …`;
}

function setStatus(text, error = false) {
  $('status').textContent = text;
  $('status').classList.toggle('error', error);
}

async function clientFor(model) {
  if (clientKey !== apiKey.value) {
    clients = {};
    clientKey = apiKey.value;
  }
  if (!clients[model]) {
    const client = new ScoringClient(location.origin, { apiKey: clientKey || undefined, model: model || undefined });
    setStatus('Fetching the model and making keys…');
    await client.ready();
    clients[model] = client;
  }
  return clients[model];
}

async function score() {
  const pixels = picked ?? mnistPixels(ink.getImageData(0, 0, pad.width, pad.height));
  if (!pixels) {
    setStatus('Draw a digit or pick one first.', true);
    return;
  }
  const result = $('result');
  result.dataset.state = 'scoring';
  $('score').disabled = true;
  showPixels($('preview'), pixels);
  result.dataset.pixels = btoa(String.fromCharCode(...pixels));
  const choice = $('model').value;
  const models = choice === 'both' ? ['', NETWORK] : [choice];
  try {
    const answers = {};
    for (const model of models) {
      const client = await clientFor(model);
      setStatus(model ? 'Encrypting and scoring in rounds…' : 'Encrypting and scoring…');
      // Each model encodes pixels / 255 as it declares: the linear one as the pixels, the network on its levels.
      const { labels, scores } = await client.predictFeatures([Array.from(pixels, (v) => v / 255)]);
      answers[model || 'linear'] = { client, label: labels[0], scores: scores[0], exchange: client.lastExchange };
    }
    const first = answers[models[0] || 'linear'];
    $('keygen').textContent = ms(first.client.keygenMs);
    buildBars(first.client.plan.classes ?? first.scores.map((_, i) => i));
    showScores(first.scores, first.label);
    $('label-model').textContent = models[0] ? 'square network' : 'linear model';
    $('other').hidden = models.length < 2;
    if (models.length > 1) $('other-label').textContent = answers[NETWORK].label;
    const { exchange } = first;
    $('encrypt').textContent = ms(exchange.encryptMs);
    $('wait').textContent = ms(exchange.waitMs);
    $('decrypt').textContent = ms(exchange.decryptMs);
    $('sent').textContent = bytesText(exchange.requestBytes);
    $('received').textContent = bytesText(exchange.replyBytes);
    $('excerpt').textContent = hexExcerpt(exchange.request);
    $('excerpt-size').textContent = bytesText(exchange.request.length);
    setStatus(`Scored under key ${first.client.keyId.slice(0, 12)}…; the server never saw the pixels.`);
    result.dataset.label = String(first.label);
    result.dataset.labels = JSON.stringify(Object.fromEntries(Object.entries(answers).map(([k, v]) => [k, v.label])));
    result.dataset.state = 'done';
  } catch (error) {
    clients = {};
    setStatus(error.message, true);
    result.dataset.state = 'error';
  } finally {
    $('score').disabled = false;
  }
}

apiKey.value = sessionStorage.getItem('apiKey') ?? '';
apiKey.addEventListener('change', () => sessionStorage.setItem('apiKey', apiKey.value));
$('score').addEventListener('click', score);
clearPad();
showPixels($('preview'), new Uint8Array(SIDE * SIDE));
loadDigits().catch((error) => setStatus(`Bundled digits unavailable: ${error.message}`, true));
