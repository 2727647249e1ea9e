// The demo page: one greedy request sent to /generate and /generate_stream at once.
// Token texts are model output: they only ever reach the page as text (textContent, append), never as HTML.

const $ = (id) => document.getElementById(id);
const api = (route) => new URL(`llm/${route}`, document.baseURI);
const INFO_FIELDS = [
  'model_id',
  'model_dtype',
  'model_device_type',
  'max_concurrent_requests',
  'max_batch_size',
  'max_input_tokens',
  'max_total_tokens',
  'queue_size',
  'batch_size',
  'router',
  'version',
];

let run = null; // { controller } of the generation on screen

function seconds(ms) {
  return `${(ms / 1000).toFixed(2)} s`;
}

function requestInit(body, signal) {
  const headers = { 'content-type': 'application/json' };
  const key = $('api-key').value.trim();
  if (key) headers.authorization = `Bearer ${key}`;
  return { method: 'POST', headers, body: JSON.stringify(body), signal };
}

/** The server's error message, whichever shape it came in. */
async function errorText(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    return `${response.status}: ${typeof body.error === 'string' ? body.error : (body.error?.message ?? text)}`;
  } catch {
    return `${response.status}: ${text || response.statusText}`;
  }
}

function setStats(pane, text, state = '') {
  const stats = $(`${pane}-stats`);
  stats.textContent = text;
  stats.dataset.state = state;
}

/** Left pane: nothing to show until the whole text is there. */
async function runPlain(body, signal) {
  const started = performance.now();
  setStats('plain', 'waiting …', 'running');
  const ticker = setInterval(() => setStats('plain', `waiting … ${seconds(performance.now() - started)}`, 'running'), 100);
  try {
    const response = await fetch(api('generate'), requestInit({ ...body, parameters: { ...body.parameters, details: true } }, signal));
    if (!response.ok) return setStats('plain', await errorText(response), 'error');
    const result = await response.json();
    $('plain-output').textContent = result.generated_text;
    setStats('plain', `total ${seconds(performance.now() - started)} · ${result.details.generated_tokens} tokens, all at the end`, 'done');
  } catch (error) {
    if (signal.aborted)
      setStats(
        'plain',
        `stopped after ${seconds(performance.now() - started)}: nothing to show, the text only comes at the end`,
        'stopped',
      );
    else setStats('plain', String(error), 'error');
  } finally {
    clearInterval(ticker);
  }
}

/** Each complete `data:` line of an SSE body, parsed. */
async function* sseEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    const lines = buffer.split(/\r?\n/);
    buffer = lines.pop();
    for (const line of lines) if (line.startsWith('data:')) yield JSON.parse(line.slice(5));
  }
}

/** Right pane: each token as it comes. */
async function runStream(body, signal) {
  const output = $('stream-output');
  const started = performance.now();
  let firstAt = 0;
  let tokens = 0;
  const rate = () => (tokens > 1 ? ((tokens - 1) * 1000) / (performance.now() - firstAt) : 0).toFixed(1);
  const summary = () => `first token after ${seconds(firstAt - started)} · ${rate()} tokens/s · ${tokens} tokens`;
  setStats('stream', 'waiting for the first token …', 'running');
  try {
    const response = await fetch(api('generate_stream'), requestInit(body, signal));
    if (!response.ok) return setStats('stream', await errorText(response), 'error');
    for await (const event of sseEvents(response.body)) {
      if (event.error) return setStats('stream', `error after ${tokens} tokens: ${event.error}`, 'error');
      if (!firstAt) firstAt = performance.now();
      tokens += 1;
      if (!event.token.special) output.append(event.token.text);
      setStats('stream', summary(), event.generated_text === null ? 'running' : 'done');
    }
    setStats('stream', `${summary()} · total ${seconds(performance.now() - started)}`, 'done');
  } catch (error) {
    if (signal.aborted) setStats('stream', `stopped: ${summary()}`, 'stopped');
    else setStats('stream', String(error), 'error');
  }
}

async function generate(event) {
  event.preventDefault();
  run?.controller.abort();
  const controller = new AbortController();
  const current = { controller };
  run = current;
  $('plain-output').textContent = '';
  $('stream-output').textContent = '';
  $('stop').disabled = false;
  const maxNewTokens = Number($('max-new-tokens').value) || 150;
  // Greedy (do_sample false), so both panes end with the same text.
  const body = { inputs: $('prompt').value, parameters: { max_new_tokens: maxNewTokens, do_sample: false } };
  await Promise.all([runPlain(body, controller.signal), runStream(body, controller.signal)]);
  if (run === current) $('stop').disabled = true;
}

// Stop aborts both requests; closing a connection is how a client cancels, and the server frees the place at
// its next decode step. The streamed pane keeps what it got; the other one has nothing.
function stop() {
  run?.controller.abort();
  $('stop').disabled = true;
}

function showInfo(info) {
  $('in-flight').value = String(info.in_flight_requests);
  const list = $('info');
  list.replaceChildren();
  for (const field of INFO_FIELDS) {
    const item = document.createElement('div');
    const term = document.createElement('dt');
    const value = document.createElement('dd');
    term.textContent = field;
    value.textContent = String(info[field] ?? '–');
    item.append(term, value);
    list.append(item);
  }
}

async function pollInfo() {
  try {
    const response = await fetch(api('info'));
    if (response.ok) showInfo(await response.json());
    else $('in-flight').value = `${response.status} (model loading?)`;
  } catch {
    $('in-flight').value = 'server unreachable';
  }
  setTimeout(pollInfo, 500);
}

$('controls').addEventListener('submit', generate);
$('stop').addEventListener('click', stop);
pollInfo();
