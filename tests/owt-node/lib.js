// Helpers for the OWT conformance scripts: start the standalone test portal, call the
// management API with MAuth, and drive Socket.IO clients of both generations.
'use strict';

const { spawn } = require('node:child_process');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const http = require('node:http');
const path = require('node:path');
const readline = require('node:readline');

const io2 = require('socket.io-client-2');
const { io: io4 } = require('socket.io-client');

const ROOT = path.resolve(__dirname, '..', '..');

// Start `owt_test_server` (OWT_TEST_SERVER, else the one `npm test` built into the cargo
// target folder); resolves to {port, serviceId, serviceKey, url, stop()}.
function startServer(env = {}) {
  const target = process.env.CARGO_TARGET_DIR || path.join(ROOT, 'target');
  const bin = process.env.OWT_TEST_SERVER || path.join(target, 'debug', 'examples', 'owt_test_server');
  const [cmd, args] = [bin, []];
  const child = spawn(cmd, args, {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('test server did not start')), 600000);
    const rl = readline.createInterface({ input: child.stdout });
    rl.on('line', (line) => {
      if (!line.startsWith('{')) return;
      rl.removeAllListeners('line');
      clearTimeout(timer);
      const info = JSON.parse(line);
      info.stop = () => new Promise((res) => {
        child.once('exit', res);
        child.stdin.end('\n');
        setTimeout(() => child.kill('SIGKILL'), 3000).unref();
      });
      info.url = `http://127.0.0.1:${info.port}`;
      resolve(info);
    });
    child.once('exit', (code) => reject(new Error(`test server exited with ${code}`)));
  });
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

// Start the real `switchyard` binary (SWITCHYARD_BIN, else the debug build) on a free
// loopback port with Galène and OWT on and the TV doors off; resolves to
// {port, serviceId, serviceKey, url, stop()} like startServer.
async function startSwitchyard() {
  const target = process.env.CARGO_TARGET_DIR || path.join(ROOT, 'target');
  const bin = process.env.SWITCHYARD_BIN || path.join(target, 'debug', 'switchyard');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchyard-owt-'));
  const port = await freePort();
  const config = path.join(dir, 'switchyard.toml');
  fs.writeFileSync(config, [
    '[web]', `listen = "127.0.0.1:${port}"`,
    '[rtc]', 'port_base = 0', 'host_addresses = ["127.0.0.1"]',
    '[htsp]', 'enabled = false', '[heliostv]', 'enabled = false', '[movie]', 'enabled = false',
  ].join('\n') + '\n');
  const data = path.join(dir, 'data');
  const child = spawn(bin, ['--http', '--config', config, '--data', data], { cwd: dir, stdio: ['ignore', 'ignore', 'inherit'] });
  const info = { port, url: `http://127.0.0.1:${port}` };
  const deadline = Date.now() + 30000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`switchyard exited with ${child.exitCode}`);
    const up = await request(info, 'GET', '/healthz').then((r) => r.status === 200, () => false);
    if (up) break;
    if (Date.now() > deadline) { child.kill('SIGKILL'); throw new Error('switchyard did not start'); }
    await sleep(100);
  }
  const keys = JSON.parse(fs.readFileSync(path.join(data, 'owt-keys.json'), 'utf8'));
  info.serviceId = keys.service_id;
  info.serviceKey = keys.service_key;
  info.stop = () => new Promise((res) => {
    child.once('exit', () => { fs.rmSync(dir, { recursive: true, force: true }); res(); });
    child.kill('SIGTERM');
    setTimeout(() => child.kill('SIGKILL'), 5000).unref();
  });
  return info;
}

function mauthHeader(serviceId, serviceKey, userRole) {
  const ts = Date.now();
  const cnonce = crypto.randomInt(0, 99999);
  let header = `MAuth realm=http://marte3.dit.upm.es,mauth_signature_method=HMAC_SHA256,mauth_serviceid=${serviceId},mauth_cnonce=${cnonce},mauth_timestamp=${ts}`;
  let text = `${ts},${cnonce}`;
  if (userRole) {
    const u = Buffer.from(userRole[0]).toString('base64');
    header += `,mauth_username=${u},mauth_role=${userRole[1]}`;
    text += `,${u},${userRole[1]}`;
  }
  const hex = crypto.createHmac('sha256', serviceKey).update(text).digest('hex');
  return `${header},mauth_signature=${Buffer.from(hex).toString('base64')}`;
}

// A plain HTTP request; resolves to {status, headers, body (string), json}.
function request(srv, method, urlPath, body, headers = {}) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : (typeof body === 'string' ? body : JSON.stringify(body));
    const req = http.request({
      host: '127.0.0.1', port: srv.port, method, path: urlPath,
      headers: { ...(data ? { 'content-type': 'application/json' } : {}), ...headers },
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { text += c; });
      res.on('end', () => {
        let json;
        try { json = JSON.parse(text); } catch (_) { json = undefined; }
        resolve({ status: res.statusCode, headers: res.headers, body: text, json });
      });
    });
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

function rest(srv, method, urlPath, body) {
  return request(srv, method, urlPath, body, { authorization: mauthHeader(srv.serviceId, srv.serviceKey) });
}

async function createRoom(srv, name, options) {
  const r = await rest(srv, 'POST', '/v1/rooms', options ? { name, options } : { name });
  if (r.status !== 200) throw new Error(`room: ${r.status} ${r.body}`);
  return r.json;
}

async function token(srv, roomId, user, role = 'presenter') {
  const r = await rest(srv, 'POST', `/v1/rooms/${roomId}/tokens/`, { user, role });
  if (r.status !== 200) throw new Error(`token: ${r.status} ${r.body}`);
  return r.body;
}

const USER_AGENT = {
  sdk: { type: 'JavaScript', version: '4.3.1' },
  runtime: { name: 'Node', version: process.versions.node },
  os: { name: 'Linux', version: 'Unknown' },
};

const NOTIFICATIONS = ['participant', 'stream', 'text', 'progress', 'drop'];

// A Socket.IO client of generation 2 (EIO3) or 4 (EIO4) with recorded notifications.
class Client {
  constructor(srv, generation = 2, opts = {}) {
    this.generation = generation;
    this.events = [];
    this.waiters = [];
    this.disconnected = false;
    const url = srv.url;
    this.socket = generation === 2
      ? io2(url, { 'force new connection': true, reconnection: false, transports: opts.transports || ['polling', 'websocket'] })
      : io4(url, { forceNew: true, reconnection: false, transports: opts.transports || ['polling', 'websocket'] });
    for (const name of NOTIFICATIONS) {
      this.socket.on(name, (data) => this.record({ name, data }));
    }
    this.socket.on('disconnect', (reason) => { this.disconnected = true; this.record({ name: 'disconnect', data: reason }); });
  }

  record(ev) {
    ev.at = process.hrtime.bigint();
    this.events.push(ev);
    this.waiters = this.waiters.filter((w) => !w(ev));
  }

  connected() {
    return new Promise((resolve, reject) => {
      if (this.socket.connected) return resolve();
      const t = setTimeout(() => reject(new Error('connect timeout')), 10000);
      this.socket.once('connect', () => { clearTimeout(t); resolve(); });
    });
  }

  // emit with ack; resolves to the ack's argument list.
  req(name, data) {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no ack for ${name}`)), 10000);
      const cb = (...args) => { clearTimeout(t); this.record({ name: `ack:${name}`, data: args }); resolve(args); };
      if (data === undefined) this.socket.emit(name, cb); else this.socket.emit(name, data, cb);
    });
  }

  // Waits for a recorded event matching `pred` (past events count).
  wait(pred, ms = 10000, what = 'event') {
    const found = this.events.find(pred);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timeout waiting for ${what}`)), ms);
      this.waiters.push((ev) => {
        if (pred(ev)) { clearTimeout(t); resolve(ev); return true; }
        return false;
      });
    });
  }

  async login(tok, extra = {}) {
    await this.connected();
    return this.req('login', { token: tok, userAgent: USER_AGENT, protocol: '1.1', ...extra });
  }

  close() { this.socket.close(); }
}

async function loggedIn(srv, roomId, user, role = 'presenter', generation = 2) {
  const c = new Client(srv, generation);
  const [status, result] = await c.login(await token(srv, roomId, user, role));
  if (status !== 'ok') throw new Error(`login: ${result}`);
  c.id = result.id;
  c.result = result;
  return c;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- real WebRTC peers (str0m test peers run by the test server) ----

const PUBLISH = {
  media: {
    audio: { source: 'mic' },
    video: { source: 'camera', parameters: { resolution: { width: 640, height: 480 }, framerate: 30 } },
  },
  attributes: { label: 'camera' },
};

function splitCandidates(sdp) {
  const lines = sdp.split('\r\n');
  const cands = [...new Set(lines.filter((l) => l.startsWith('a=candidate')))];
  return { sdp: lines.filter((l) => !l.startsWith('a=candidate')).join('\r\n'), cands };
}

async function report(srv, peer) {
  return (await request(srv, 'GET', `/test/peers/${peer}/report`)).json;
}

async function waitReport(srv, peer, pred, ms = 10000) {
  const end = Date.now() + ms;
  for (;;) {
    const r = await report(srv, peer);
    if (pred(r)) return r;
    if (Date.now() > end) throw new Error(`peer report never satisfied: ${JSON.stringify(r)}`);
    await sleep(200);
  }
}

// Publish through `c` with a test peer; trickles the peer's candidates with the `a=` prefix.
async function publish(srv, c, simulcast = []) {
  const peer = (await request(srv, 'POST', '/test/peers', { kind: 'publisher', simulcast })).json;
  assert.ok(peer.offer, JSON.stringify(peer));
  const [s, r] = await c.req('publish', PUBLISH);
  assert.equal(s, 'ok', r);
  const { id } = r;
  const { sdp, cands } = splitCandidates(peer.offer);
  assert.deepEqual(await c.req('soac', { id, signaling: { type: 'offer', sdp } }), ['ok']);
  const answer = await c.wait((e) => e.name === 'progress' && e.data.id === id && e.data.status === 'soac');
  assert.equal((await request(srv, 'POST', `/test/peers/${peer.id}/answer`, { sdp: answer.data.data.sdp })).json.ok, true);
  for (const candidate of cands) {
    assert.deepEqual(await c.req('soac', { id, signaling: { type: 'candidate', candidate: { candidate, sdpMid: '0', sdpMLineIndex: 0 } } }), ['ok']);
  }
  await c.wait((e) => e.name === 'progress' && e.data.id === id && e.data.status === 'ready', 15000, 'publication ready');
  return { id, peer: peer.id, answer: answer.data.data };
}

async function subscribe(srv, c, media) {
  const peer = (await request(srv, 'POST', '/test/peers', { kind: 'receiver' })).json;
  const [s, r] = await c.req('subscribe', { media });
  assert.equal(s, 'ok', r);
  const { id } = r;
  assert.ok(!c.events.some((e) => e.name === 'progress' && e.data.id === id), 'progress before the ack');
  assert.deepEqual(await c.req('soac', { id, signaling: { type: 'offer', sdp: peer.offer } }), ['ok']);
  const answer = await c.wait((e) => e.name === 'progress' && e.data.id === id && e.data.status === 'soac');
  assert.equal((await request(srv, 'POST', `/test/peers/${peer.id}/answer`, { sdp: answer.data.data.sdp })).json.ok, true);
  await c.wait((e) => e.name === 'progress' && e.data.id === id && e.data.status === 'ready', 15000, 'subscription ready');
  return { id, peer: peer.id, answer: answer.data.data };
}

const peers = { PUBLISH, report, waitReport, publish, subscribe };

module.exports = {
  startServer, startSwitchyard, mauthHeader, request, rest, createRoom, token, Client, loggedIn, sleep, USER_AGENT, peers,
};
